package configdelta

import (
	"fmt"
	"strings"
	"testing"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"google.golang.org/protobuf/proto"
)

func snapshot(version, rev int64, specs map[string]int, eps ...string) *Snapshot {
	c := &agentv1.Config{Version: version, EndpointsRevision: rev}
	for name, size := range specs {
		c.Resources = append(c.Resources, &agentv1.Resource{Kind: "VirtualService", Namespace: "default", Name: name, Spec: []byte(strings.Repeat("x", size))})
	}
	for _, addr := range eps {
		c.Endpoints = append(c.Endpoints, &agentv1.Endpoint{Service: "api", Address: addr, SpiffeId: "spiffe://example.org/ns/default/sa/api", Labels: map[string]string{"version": "v1"}})
	}
	return FromConfig(c)
}

// rooted is s with root as its RootNamespace, through a Config as the
// server's snapshots are read back.
func rooted(s *Snapshot, root string) *Snapshot {
	c := s.Config()
	c.RootNamespace = root
	return FromConfig(c)
}

func many(n, size int) map[string]int {
	out := map[string]int{}
	for i := range n {
		out[fmt.Sprintf("vs-%d", i)] = size
	}
	return out
}

// Diff then Receiver.Apply reproduces the sender's snapshot, whatever the
// change, and no delta is larger than the budget plus one item.
func TestDiffRoundTrip(t *testing.T) {
	const budget = 64 << 10
	tests := []struct {
		name     string
		from, to *Snapshot
	}{
		{"first, small", nil, snapshot(1, 1, map[string]int{"a": 10}, "127.0.0.1:1")},
		{"first, many times the budget", nil, snapshot(1, 1, many(500, 1000), "127.0.0.1:1", "127.0.0.1:2")},
		{"one item over the budget", nil, snapshot(1, 1, map[string]int{"big": 3 * budget, "a": 10})},
		{"change, add, remove", snapshot(1, 1, map[string]int{"a": 10, "b": 10}, "127.0.0.1:1"), snapshot(2, 2, map[string]int{"a": 11, "c": 10}, "127.0.0.1:2")},
		{"only the version", snapshot(1, 1, map[string]int{"a": 10}), snapshot(2, 1, map[string]int{"a": 10})},
		{"everything removed", snapshot(1, 1, many(300, 500), "127.0.0.1:1"), snapshot(2, 2, nil)},
		// The root namespace of mesh-wide Policies rides on every delta.
		{"root namespace", nil, rooted(snapshot(1, 1, map[string]int{"a": 10}), "mesh")},
		{"root namespace, many deltas", rooted(snapshot(1, 1, nil), "mesh"), rooted(snapshot(2, 1, many(500, 1000)), "mesh")},
		{"root namespace only", snapshot(1, 1, nil), rooted(snapshot(1, 1, nil), "mesh")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Receiver
			if tt.from != nil {
				for _, d := range Diff(nil, tt.from, budget) {
					if _, err := r.Apply(d); err != nil {
						t.Fatal(err)
					}
				}
			}
			deltas := Diff(tt.from, tt.to, budget)
			var got *Snapshot
			for i, d := range deltas {
				if size := proto.Size(d); size > budget+3*budget+1024 {
					t.Errorf("delta %d is %d bytes", i, size)
				}
				if d.GetComplete() != (i == len(deltas)-1) {
					t.Errorf("delta %d of %d: complete=%v", i, len(deltas), d.GetComplete())
				}
				snap, err := r.Apply(d)
				if err != nil {
					t.Fatal(err)
				}
				if (snap != nil) != d.GetComplete() {
					t.Fatalf("delta %d: snapshot %v before complete", i, snap != nil)
				}
				got = snap
			}
			if !Same(got, tt.to) {
				t.Fatalf("received %d resources, %d endpoints at %d/%d; want %d, %d at %d/%d",
					len(got.Resources), len(got.Endpoints), got.Version, got.EndpointsRevision, len(tt.to.Resources), len(tt.to.Endpoints), tt.to.Version, tt.to.EndpointsRevision)
			}
		})
	}
}

// A size budget keeps large states in many messages, each under gRPC's
// default 4 MiB even at MaxMessageBytes plus a 2 MiB resource.
func TestDiffBoundsMessages(t *testing.T) {
	to := snapshot(1, 1, many(3000, 2500))
	to.Resources["VirtualService/default/huge"] = &agentv1.Resource{Kind: "VirtualService", Namespace: "default", Name: "huge", Spec: make([]byte, 2<<20)}
	deltas := Diff(nil, to, MaxMessageBytes)
	if len(deltas) < 8 {
		t.Fatalf("%d deltas for %d bytes", len(deltas), 3000*2500)
	}
	for i, d := range deltas {
		if size := proto.Size(d); size >= 4<<20 {
			t.Fatalf("delta %d is %d bytes", i, size)
		}
	}
}

func TestReceiverRefuses(t *testing.T) {
	var r Receiver
	if _, err := r.Apply(&agentv1.ConfigDelta{Complete: true}); err != ErrNoFull {
		t.Fatalf("delta before full: %v", err)
	}
	if _, err := r.Apply(&agentv1.ConfigDelta{Full: true, Resources: []*agentv1.Resource{{Kind: "VirtualService"}}}); err == nil {
		t.Fatal("a resource without a name was taken")
	}
}

// FuzzReceiver feeds arbitrary deltas, as a peer on the stream could send
// them: the receiver errs or assembles, never panics.
func FuzzReceiver(f *testing.F) {
	for _, d := range Diff(nil, snapshot(3, 4, map[string]int{"a": 5, "b": 7}, "127.0.0.1:1"), 64) {
		b, _ := proto.Marshal(d)
		f.Add(b, b)
	}
	f.Fuzz(func(t *testing.T, a, b []byte) {
		var r Receiver
		for _, raw := range [][]byte{a, b} {
			var d agentv1.ConfigDelta
			if proto.Unmarshal(raw, &d) != nil {
				return
			}
			snap, err := r.Apply(&d)
			if err == nil && snap != nil {
				_ = snap.Config()
			}
		}
	})
}
