package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/internal/backoff"
	"github.com/sigil-mesh/sigil/naming"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Several sigil-server replicas (Kubernetes HA): --server lists them, or
// names a headless Service whose DNS name has one A record per replica.
// The agent talks to one at a time. When a call finds it gone
// (Unavailable), the agent moves to another; when a follower answers a
// signing call with the leader's address (agentv1.NotLeader), it moves
// there. The call is retried on the backoff schedule within its own
// deadline, so the cache's signing and the agent's renewal see one slower
// call rather than a failure, and the SVIDs already held keep serving
// meanwhile.

// ParseServers splits --server: HOST:PORT addresses separated by commas.
func ParseServers(s string) ([]string, error) {
	var out []string
	for _, a := range strings.Split(s, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		host, port, err := net.SplitHostPort(a)
		if err != nil || host == "" || port == "" {
			return nil, fmt.Errorf("agent: --server %q: want HOST:PORT", a)
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, errors.New("agent: --server is required")
	}
	return out, nil
}

// recentlyFailed is how long an address that failed is passed over when
// a follower names it as the leader: the follower has not yet seen the
// leader's Lease run out.
const recentlyFailed = 10 * time.Second

// servers is the agent's choice among the server replicas.
type servers struct {
	given []string // --server, as given
	now   func() time.Time
	// lookup resolves a host name to its addresses (A/AAAA records).
	lookup func(ctx context.Context, host string) ([]string, error)

	mu     sync.Mutex
	cur    string
	failed map[string]time.Time
}

func newServers(given []string) *servers {
	return &servers{given: given, cur: given[0], now: time.Now, lookup: net.DefaultResolver.LookupHost, failed: map[string]time.Time{}}
}

// current returns the address calls go to now.
func (s *servers) current() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// candidates are the given addresses with every host name replaced by the
// addresses it resolves to, in order, without repeats.
func (s *servers) candidates(ctx context.Context) []string {
	var out []string
	seen := map[string]bool{}
	add := func(a string) {
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	for _, a := range s.given {
		e, err := naming.ParseEndpoint(a)
		if err != nil || e.Host() == "" {
			add(a)
			continue
		}
		port := strconv.Itoa(int(e.Port()))
		lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ips, err := s.lookup(lctx, e.Host())
		cancel()
		if err != nil || len(ips) == 0 {
			add(a)
			continue
		}
		for _, ip := range ips {
			add(net.JoinHostPort(ip, port))
		}
	}
	return out
}

// moveOn leaves from, which failed a call (or named another leader), for
// leader when it is given and has not failed lately, else for the next
// candidate that has not. It returns the new address and whether the call
// is worth retrying at once (a new leader is named); otherwise the caller
// waits on the backoff schedule first.
func (s *servers) moveOn(ctx context.Context, from, leader string) (string, bool) {
	cands := s.candidates(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if leader == "" {
		s.failed[from] = now
	}
	if s.cur != from {
		return s.cur, true // another call moved already
	}
	if leader != "" && leader != from && now.Sub(s.failed[leader]) > recentlyFailed {
		s.cur = leader
		return s.cur, true
	}
	if leader != "" {
		// The follower names a leader that just failed us: its Lease has
		// not run out yet. Stay, and ask again after a wait.
		return s.cur, false
	}
	// Round robin from the failed address: the first candidate after it
	// that has not failed lately; else the next one, after a wait.
	idx, n := slices.Index(cands, from), len(cands)
	fallback := ""
	for k := 1; k <= n; k++ {
		a := cands[(idx+k+n)%n]
		if a == from {
			continue
		}
		if fallback == "" {
			fallback = a
		}
		if now.Sub(s.failed[a]) > recentlyFailed {
			s.cur = a
			return a, true
		}
	}
	if fallback != "" {
		s.cur = fallback
	}
	return s.cur, false
}

// passthrough prefixes a connection's target: the address is dialled as
// given, without gRPC's resolver.
const passthrough = "passthrough:///"

// maxAttempts bounds the tries of one call across replicas; with the
// backoff between them it spans about half a minute.
const maxAttempts = 10

// retryable reports whether a call's error says another replica (or the
// same one later) may answer it: the replica is unreachable, is not the
// leader, or the connection was closed under the call by a move.
func retryable(ctx context.Context, err error) (leader string, ok bool) {
	if ctx.Err() != nil {
		return "", false
	}
	if l, notLeader := agentv1.LeaderHint(err); notLeader {
		return l, true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.Canceled:
		return "", true
	}
	return "", false
}

// failoverUnary retries a unary call on another replica while it fails in
// a way another may not (retryable), up to maxAttempts and within the
// call's context. withSVID says which kind of connection the call needs.
func (c *client) failoverUnary(withSVID bool) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		var b backoff.Backoff
		conn, addr := cc, connAddr(cc)
		var temp *grpc.ClientConn // a no-SVID connection made for a retry
		defer func() {
			if temp != nil {
				temp.Close()
			}
		}()
		for attempt := 1; ; attempt++ {
			err := invoker(ctx, method, req, reply, conn, opts...)
			leader, ok := retryable(ctx, err)
			if err == nil || !ok || attempt == maxAttempts {
				return err
			}
			next, now := c.servers.current(), true
			if status.Code(err) != codes.Canceled {
				next, now = c.servers.moveOn(ctx, addr, leader)
			} // else the connection was closed under the call (a move, a new agent SVID): not the replica's fault
			if next != addr {
				c.log.Info("server replica changed", "previous_server", addr, "server", next, "method", method, "error", status.Convert(err).Message())
			}
			_, electing := agentv1.LeaderHint(err)
			if !now && !electing {
				// No other replica to try (one server, or all failed
				// lately): the caller's own retry loop takes it from here.
				return err
			}
			if !now && !backoff.Sleep(ctx, b.Next(), nil) {
				return err
			}
			if withSVID {
				if next != addr {
					c.resetFrom(addr) // only a move drops the shared connection: calls on it fail over too
				}
				if conn, err = c.current(); err != nil {
					return err
				}
			} else {
				if temp != nil {
					temp.Close()
				}
				if temp, err = c.dialTo(next, false); err != nil {
					return err
				}
				conn = temp
			}
			addr = next
		}
	}
}

// failoverStream moves the agent to another replica when a stream's
// replica goes away, so the stream's loop reconnects elsewhere.
func (c *client) failoverStream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	addr := connAddr(cc)
	cs, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		c.streamFailed(ctx, addr, err)
		return nil, err
	}
	return &watchedStream{ClientStream: cs, ctx: ctx, c: c, addr: addr}, nil
}

// connAddr is the replica a connection goes to (dialTo's target).
func connAddr(cc *grpc.ClientConn) string {
	return strings.TrimPrefix(cc.Target(), passthrough)
}

func (c *client) streamFailed(ctx context.Context, addr string, err error) {
	if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
		return
	}
	if next, _ := c.servers.moveOn(ctx, addr, ""); next != addr {
		c.log.Info("server replica changed", "previous_server", addr, "server", next, "error", status.Convert(err).Message())
		c.resetFrom(addr)
	}
}

// watchedStream reports a stream's end by an unreachable replica.
type watchedStream struct {
	grpc.ClientStream
	ctx  context.Context
	c    *client
	addr string
}

func (w *watchedStream) RecvMsg(m any) error {
	err := w.ClientStream.RecvMsg(m)
	if err != nil {
		w.c.streamFailed(w.ctx, w.addr, err)
	}
	return err
}
