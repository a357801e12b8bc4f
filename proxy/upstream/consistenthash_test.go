package upstream

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/traffic"
)

func hashCluster(n int) *Cluster {
	c := &Cluster{rr: new(atomic.Uint64), lb: lbRoundRobin, Hash: &HashPolicy{header: "X-User"}}
	for i := range n {
		c.Eps = append(c.Eps, &Endpoint{Addr: fmt.Sprintf("10.0.0.%d:15006", i+1)})
	}
	return c
}

// TestConsistentHashPick: the same key always reaches the same endpoint;
// keys spread over every endpoint; removing an endpoint moves only the
// keys it held; an ejected endpoint is left out; no key falls back to the
// cluster's balancer.
func TestConsistentHashPick(t *testing.T) {
	c := hashCluster(5)
	const keys = 2000
	owner := map[string]*Endpoint{}
	count := map[*Endpoint]int{}
	for i := range keys {
		k := fmt.Sprintf("user-%d", i)
		e := c.Pick(nil, k)
		for range 3 {
			if again := c.Pick(nil, k); again != e {
				t.Fatalf("key %s: %s then %s", k, e.Addr, again.Addr)
			}
		}
		owner[k] = e
		count[e]++
	}
	for _, e := range c.Eps {
		if n := count[e]; n < keys/5/2 || n > keys/5*2 {
			t.Errorf("%s holds %d of %d keys, want about %d", e.Addr, n, keys, keys/5)
		}
	}
	gone := c.Eps[2]
	fewer := &Cluster{Eps: append(append([]*Endpoint{}, c.Eps[:2]...), c.Eps[3:]...), rr: c.rr, lb: c.lb, Hash: c.Hash}
	for k, e := range owner {
		got := fewer.Pick(nil, k)
		if e != gone && got != e {
			t.Fatalf("key %s moved from %s to %s though its endpoint stayed", k, e.Addr, got.Addr)
		}
		if got == gone {
			t.Fatalf("key %s still reaches the removed endpoint", k)
		}
	}
	// Ejected: its keys go elsewhere, the others stay.
	c.Eps[0].ejectedUntil = time.Now().Add(time.Minute)
	for k, e := range owner {
		got := c.Pick(nil, k)
		if got == c.Eps[0] || (e != c.Eps[0] && got != e) {
			t.Fatalf("with %s ejected, key %s went to %s (was %s)", c.Eps[0].Addr, k, got.Addr, e.Addr)
		}
	}
	c.Eps[0].ejectedUntil = time.Time{}
	// No key: round robin visits every endpoint.
	seen := map[*Endpoint]bool{}
	for range 5 {
		seen[c.Pick(nil, "")] = true
	}
	if len(seen) != 5 {
		t.Errorf("without a key, %d endpoints picked in 5 round-robin picks, want 5", len(seen))
	}
}

// TestConsistentHashKey: each consistentHash key reads its part of the
// request; an httpCookie the request lacks is generated (from the source
// address, Max-Age from ttl, a session cookie for ttl 0) only when ttl is
// given.
func TestConsistentHashKey(t *testing.T) {
	dur := func(d time.Duration) *traffic.Duration { return &traffic.Duration{Duration: d} }
	policy := func(ch traffic.ConsistentHash) *HashPolicy {
		return hashPolicyOf(&traffic.TrafficPolicy{LoadBalancer: &traffic.LoadBalancer{ConsistentHash: &ch}})
	}
	req := func(target string, hdr ...string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, target, nil)
		r.RemoteAddr = "10.1.2.3:40000"
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Add(hdr[i], hdr[i+1])
		}
		return r
	}
	tests := []struct {
		name    string
		hp      *HashPolicy
		r       *http.Request
		wantKey string // "gen": the generated value
		cookie  string // the Set-Cookie, "" for none
	}{
		{"header", policy(traffic.ConsistentHash{HTTPHeaderName: "x-user"}), req("/", "X-User", "alice"), "alice", ""},
		{"header absent", policy(traffic.ConsistentHash{HTTPHeaderName: "x-user"}), req("/"), "", ""},
		{"query", policy(traffic.ConsistentHash{HTTPQueryParameterName: "u"}), req("/p?u=bob&v=1"), "bob", ""},
		{"source ip", policy(traffic.ConsistentHash{UseSourceIP: true}), req("/"), "10.1.2.3", ""},
		{"cookie present", policy(traffic.ConsistentHash{HTTPCookie: &traffic.HTTPCookie{Name: "user", TTL: dur(0)}}), req("/", "Cookie", "user=carol"), "carol", ""},
		{"cookie generated, session", policy(traffic.ConsistentHash{HTTPCookie: &traffic.HTTPCookie{Name: "user", TTL: dur(0)}}), req("/"), "gen", "user=GEN; HttpOnly"},
		{"cookie generated, ttl and path", policy(traffic.ConsistentHash{HTTPCookie: &traffic.HTTPCookie{Name: "user", Path: "/app", TTL: dur(90 * time.Second)}}), req("/"), "gen", "user=GEN; Path=/app; Max-Age=90; HttpOnly"},
		{"cookie without ttl not generated", policy(traffic.ConsistentHash{HTTPCookie: &traffic.HTTPCookie{Name: "user"}}), req("/"), "", ""},
		{"no consistentHash", nil, req("/", "X-User", "alice"), "", ""},
	}
	gen := fmt.Sprintf("%x", hash64("10.1.2.3:40000"))
	for _, tt := range tests {
		key, set := tt.hp.Key(tt.r)
		want := strings.ReplaceAll(tt.wantKey, "gen", gen)
		if key != want {
			t.Errorf("%s: key %q, want %q", tt.name, key, want)
		}
		got := ""
		if set != nil {
			got = set.String()
		}
		if wantCookie := strings.ReplaceAll(tt.cookie, "GEN", gen); got != wantCookie {
			t.Errorf("%s: Set-Cookie %q, want %q", tt.name, got, wantCookie)
		}
	}
}
