package proxy

import (
	"testing"

	"github.com/sigil-mesh/sigil/auditstream/spool"
	"github.com/sigil-mesh/sigil/policy"
)

// BenchmarkAuditRecord is the audit export's cost per decision on the
// deciding sidecar's request path: mask, encode, seal and append one
// decision like those of bench/scripts/ab-pairs.sh (bench/README.md, Cost
// of audit export, has the figures).
func BenchmarkAuditRecord(b *testing.B) {
	mask, err := policy.ParseMask(policy.DefaultMask)
	if err != nil {
		b.Fatal(err)
	}
	sp, err := spool.Open(b.TempDir(), spool.Options{MaxBytes: 1 << 30, Writer: "spiffe://example.org/ns/bench/sa/bench#12345678"})
	if err != nil {
		b.Fatal(err)
	}
	defer sp.Close()
	a := newAuditRecorder(mask, map[string]string{"service": "api"})
	a.sp.Store(sp)
	headers := map[string]string{"host": "api", "user-agent": "fortio.org/fortio-1.69.1", "x-request-id": "6f1c2a4e-93b1-4c55-9f0d-2a7e0d5c1b11",
		"x-forwarded-proto": "http", "authorization": "Bearer secret", "accept": "*/*"}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		in := &policy.Input{
			Source:      policy.PeerFromID("spiffe://example.org/ns/bench/sa/bench"),
			Destination: policy.Dest{Principal: "spiffe://example.org/ns/bench/sa/bench", Service: "api", Namespace: "bench", Port: 18080},
			Request: policy.Request{Method: "GET", Path: "/echo?size=1024", URLPath: "/echo", Query: map[string][]string{"size": {"1024"}},
				Host: "api", Headers: headers, Protocol: policy.ProtocolHTTP},
			Connection: policy.Connection{TLSVersion: "TLSv1.3"},
		}
		err := a.Record(in, policy.Decision{ID: "9b2f6d1e-5c1a-4f7e-8e0b-3d4c5a6b7c8d", Allow: true, Mode: policy.ModeEnforce, Revision: "r1"})
		if err != nil {
			b.Fatal(err)
		}
	}
}
