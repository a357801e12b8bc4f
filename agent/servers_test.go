package agent

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestParseServers(t *testing.T) {
	cases := []struct {
		in   string
		want int
		ok   bool
	}{
		{"127.0.0.1:8081", 1, true},
		{"a:1,b:2", 2, true},
		{" a:1 , b:2 ,", 2, true},
		{"sigil-server.sigil-system.svc:8081", 1, true},
		{"", 0, false},
		{"a", 0, false},
		{"a:1,:2", 0, false},
	}
	for _, tc := range cases {
		got, err := ParseServers(tc.in)
		if (err == nil) != tc.ok || len(got) != tc.want {
			t.Errorf("ParseServers(%q) = %v, %v", tc.in, got, err)
		}
	}
}

// TestServerFailoverChoice is how the agent picks the next replica: round
// robin past one that failed, to the leader a follower names unless that
// one just failed (its Lease has not run out), and through a headless
// Service's addresses.
func TestServerFailoverChoice(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1000, 0)
	newS := func(given ...string) *servers {
		s := newServers(given)
		s.now = func() time.Time { return now }
		s.lookup = func(_ context.Context, host string) ([]string, error) {
			if host == "sigil-server.sigil-system.svc" {
				return []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"}, nil
			}
			return nil, errors.New("no such host")
		}
		return s
	}
	type step struct {
		from, leader string
		want         string
		now          bool
	}
	cases := []struct {
		name  string
		given []string
		steps []step
	}{
		{"round robin past a failed replica", []string{"a:1", "b:1", "c:1"}, []step{
			{"a:1", "", "b:1", true},
			{"b:1", "", "c:1", true},
			{"c:1", "", "a:1", false}, // every replica failed lately: move, but wait first
		}},
		{"to the leader a follower names", []string{"a:1", "b:1"}, []step{
			{"a:1", "b:1", "b:1", true},
		}},
		{"not to a named leader that just failed", []string{"a:1", "b:1"}, []step{
			{"a:1", "", "b:1", true},
			{"b:1", "a:1", "b:1", false},
		}},
		{"a single server stays", []string{"a:1"}, []step{
			{"a:1", "", "a:1", false},
		}},
		{"a headless Service's addresses", []string{"sigil-server.sigil-system.svc:8081"}, []step{
			{"sigil-server.sigil-system.svc:8081", "", "10.0.0.1:8081", true},
			{"10.0.0.1:8081", "", "10.0.0.2:8081", true},
			{"10.0.0.2:8081", "10.0.0.3:8081", "10.0.0.3:8081", true},
		}},
		{"a move another call made first is kept", []string{"a:1", "b:1", "c:1"}, []step{
			{"a:1", "", "b:1", true},
			{"a:1", "", "b:1", true},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newS(tc.given...)
			for i, st := range tc.steps {
				got, at := s.moveOn(ctx, st.from, st.leader)
				if got != st.want || at != st.now {
					t.Fatalf("step %d: moveOn(%s, %q) = %s, %v; want %s, %v", i, st.from, st.leader, got, at, st.want, st.now)
				}
			}
		})
	}
}

func TestServerFailoverRetryable(t *testing.T) {
	live, done := context.Background(), func() context.Context {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		return ctx
	}()
	cases := []struct {
		name   string
		ctx    context.Context
		err    error
		leader string
		ok     bool
	}{
		{"not the leader", live, agentv1.NotLeader("b:1"), "b:1", true},
		{"no leader yet", live, agentv1.NotLeader(""), "", true},
		{"unreachable", live, status.Error(codes.Unavailable, "connection refused"), "", true},
		{"connection closed by a move", live, status.Error(codes.Canceled, "grpc: the client connection is closing"), "", true},
		{"refused", live, status.Error(codes.PermissionDenied, "evicted"), "", false},
		{"caller gave up", done, status.Error(codes.Unavailable, "x"), "", false},
	}
	for _, tc := range cases {
		leader, ok := retryable(tc.ctx, tc.err)
		if leader != tc.leader || ok != tc.ok {
			t.Errorf("%s: retryable = %q, %v; want %q, %v", tc.name, leader, ok, tc.leader, tc.ok)
		}
	}
}

// FuzzParseServers: --server never panics, and what it accepts is a
// non-empty list of HOST:PORT with neither part empty.
func FuzzParseServers(f *testing.F) {
	for _, s := range []string{"127.0.0.1:8081", "a:1,b:2", "[::1]:8081", " , a:1", "a", ",,,", "sigil-server.sigil-system.svc:8081,[fd00::1]:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseServers(s)
		if err != nil {
			return
		}
		if len(got) == 0 {
			t.Fatalf("ParseServers(%q): accepted an empty list", s)
		}
		for _, a := range got {
			host, port, err := net.SplitHostPort(a)
			if err != nil || host == "" || port == "" || strings.Contains(a, ",") {
				t.Fatalf("ParseServers(%q): accepted %q", s, a)
			}
		}
	})
}
