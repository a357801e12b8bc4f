package bench

import (
	"testing"

	"github.com/sigil-mesh/sigil/pathnorm"
)

// BenchmarkPathNormalize is the per-request cost of normalizing a request
// target on each side of a sidecar: "normal" is the common case (already
// normal, returned as it is without allocating), "rewritten" one that
// needs decoding, dot segments and merged slashes.
func BenchmarkPathNormalize(b *testing.B) {
	var o pathnorm.Options
	for _, c := range []struct{ name, target string }{
		{"normal", "/api/v1/users/12345/orders?limit=20&cursor=abc"},
		{"grpc", "/grpc.health.v1.Health/Check"},
		{"rewritten", "/api/v1/./users//12345/%6Frders/../orders?limit=20"},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := o.Target("GET", c.target); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
