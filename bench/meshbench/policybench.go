package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/policy"
)

type policyResult struct {
	Rules       int     `json:"rules"`
	NsPerOp     float64 `json:"ns_per_op"`
	AllocsPerOp int64   `json:"allocs_per_op"`
	BytesPerOp  int64   `json:"bytes_per_op"`
	P50us       float64 `json:"p50_us"`
	P99us       float64 `json:"p99_us"`
}

// rulesPolicy is a policy of n allow rules, one per caller, in the style
// of per-service authorization; the caller asked about matches the last.
func rulesPolicy(n int) string {
	var b strings.Builder
	b.WriteString("package sigil.authz\n\ndefault allow := false\n")
	for i := range n {
		fmt.Fprintf(&b, `
allow if {
	input.source.principal == "spiffe://example.org/ns/team%d/sa/svc%d"
	input.request.method in {"GET", "HEAD"}
	startswith(input.request.path, "/api/%d/")
}
`, i, i, i)
	}
	return b.String()
}

// policyBench is scenario 7: a decision, as the sidecar makes it, for
// policies of 1, 100 and 1000 rules.
func policyBench() []policyResult {
	var out []policyResult
	for _, n := range []int{1, 100, 1000} {
		dir, _ := os.MkdirTemp("", "policy-")
		os.WriteFile(dir+"/p.rego", []byte(rulesPolicy(n)), 0o644)
		eng, err := policy.New(context.Background(), dir, slog.New(slog.DiscardHandler))
		os.RemoveAll(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "policy bench:", err)
			continue
		}
		last := n - 1
		in := &policy.Input{
			Source:      policy.PeerFromID(fmt.Sprintf("spiffe://example.org/ns/team%d/sa/svc%d", last, last)),
			Destination: policy.Dest{Principal: "spiffe://example.org/ns/default/sa/api", Service: "api", Port: 8080},
			Request: policy.Request{Method: "GET", Path: fmt.Sprintf("/api/%d/items", last), Host: "api", Protocol: policy.ProtocolHTTP,
				Headers: map[string]string{"user-agent": "bench", "accept": "*/*", "x-request-id": "abc"}},
			Connection: policy.Connection{TLSVersion: "TLSv1.3"},
		}
		ctx := context.Background()
		if d := eng.Decide(ctx, in); !d.Allow {
			fmt.Fprintln(os.Stderr, "policy bench: the benchmark input is not allowed", d.Err)
		}
		res := testing.Benchmark(func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				eng.Decide(ctx, in)
			}
		})
		lat := make([]time.Duration, 20000)
		for i := range lat {
			t := time.Now()
			eng.Decide(ctx, in)
			lat[i] = time.Since(t)
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		out = append(out, policyResult{Rules: n, NsPerOp: float64(res.NsPerOp()), AllocsPerOp: res.AllocsPerOp(), BytesPerOp: res.AllocedBytesPerOp(),
			P50us: float64(lat[len(lat)/2].Nanoseconds()) / 1000, P99us: float64(lat[len(lat)*99/100].Nanoseconds()) / 1000})
	}
	return out
}
