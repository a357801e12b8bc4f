package proxy

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/sigil-mesh/sigil/auditstream/spool"
	"github.com/sigil-mesh/sigil/policy"
)

// TestAuditRecordBuffersNotShared: the recorder encodes each decision's
// masked input into a buffer it reuses across decisions (inputBufs).
// Decisions recorded at once from many goroutines, some with an input
// too large to be kept, each reach the spool with their own input whole:
// no buffer is reused while a record still reads it.
func TestAuditRecordBuffersNotShared(t *testing.T) {
	mask, err := policy.ParseMask(policy.DefaultMask)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := spool.Open(t.TempDir(), spool.Options{Writer: "spiffe://example.org/ns/bench/sa/bench#12345678", Consumers: []string{"c"}})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	a := newAuditRecorder(mask, map[string]string{"service": "api"})
	a.sp.Store(sp)
	const goroutines, each = 8, 50
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := fmt.Sprintf("d-%d-%d", g, i)
				h := map[string]string{"x-id": id, "authorization": "Bearer secret"}
				if i%10 == 0 {
					h["x-large"] = strings.Repeat(id, maxKeptInputBuf/len(id)+1)
				}
				in := &policy.Input{Source: policy.PeerFromID("spiffe://example.org/ns/bench/sa/bench"),
					Request: policy.Request{Method: "GET", Path: "/" + id, URLPath: "/" + id, Query: map[string][]string{}, Headers: h, Protocol: policy.ProtocolHTTP}}
				if err := a.Record(in, policy.Decision{ID: id, Allow: true, Mode: policy.ModeEnforce}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	seen := 0
	for {
		b, err := sp.Read("c", 1000, 64<<20)
		if err != nil {
			t.Fatal(err)
		}
		if len(b.Lines) == 0 {
			break
		}
		for _, line := range b.Lines {
			var r struct {
				DecisionID string `json:"decision_id"`
				Input      struct {
					Request struct {
						Path    string            `json:"path"`
						Headers map[string]string `json:"headers"`
					} `json:"request"`
				} `json:"input"`
			}
			if err := json.Unmarshal(line, &r); err != nil {
				t.Fatalf("%v: %s", err, line)
			}
			if r.Input.Request.Path != "/"+r.DecisionID || r.Input.Request.Headers["x-id"] != r.DecisionID {
				t.Fatalf("decision %s recorded with the input of another: path %s, x-id %s", r.DecisionID, r.Input.Request.Path, r.Input.Request.Headers["x-id"])
			}
			if _, ok := r.Input.Request.Headers["authorization"]; ok {
				t.Fatalf("decision %s recorded with its authorization header", r.DecisionID)
			}
			seen++
		}
		if err := sp.Commit("c", b.Next); err != nil {
			t.Fatal(err)
		}
	}
	if seen != goroutines*each {
		t.Fatalf("%d records spooled, want %d", seen, goroutines*each)
	}
}
