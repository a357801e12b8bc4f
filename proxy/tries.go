package proxy

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sigil-mesh/sigil/proxy/hop"
	"github.com/sigil-mesh/sigil/traffic"
)

// tries repeats one request as its route says (retries.attempts, retryOn,
// perTryTimeout), whatever it is sent to: the endpoints of a mesh
// cluster (send) or a host outside the mesh (sendOutside). The route's
// timeout bounds the whole in the caller's ctx.
type tries struct {
	rt       *traffic.Route
	attempts int // retries allowed after the first try (0: the body cannot be sent again)
	// try sends attempt n (0 for the first) with ctx, which carries the
	// per-try timeout.
	try func(ctx context.Context, n int) (*http.Response, error)
	// done learns the outcome of each attempt, for outlier detection:
	// status 0 when no response came; connectFailed when no connection
	// was made. Nil: nothing to learn.
	done func(status int, connectFailed bool)
	// budget reports whether one more retry may go (the connection pool's
	// retry budget); nil: always.
	budget func() bool
	// retried counts a retry sent (exhausted false) or one the budget
	// refused (true).
	retried func(exhausted bool)
}

// run sends until an attempt succeeds, fails in a way retryOn does not
// retry, or the attempts, the budget or ctx run out (then the error is
// context.DeadlineExceeded). It returns the response and the cancel of
// its attempt's context, to call when the response has been copied.
func (t *tries) run(ctx context.Context) (*http.Response, context.CancelFunc, error) {
	for attempt := 0; ; attempt++ {
		tryCtx, tryCancel := ctx, context.CancelFunc(func() {})
		if t.rt.PerTry > 0 {
			tryCtx, tryCancel = context.WithTimeout(ctx, t.rt.PerTry)
		}
		resp, err := t.try(tryCtx, attempt)
		kind := failureKind(err)
		connectFailed := err != nil && kind == traffic.FailConnect
		status := 0
		if err != nil && ctx.Err() == nil && tryCtx.Err() != nil {
			// The per-try timeout, not the route's: Envoy counts it as a
			// 504, for retryOn and for outlier detection alike.
			kind, status, err = traffic.FailTimeout, http.StatusGatewayTimeout, context.DeadlineExceeded
		}
		if resp != nil {
			hop.GRPCTrailersOnly(resp)
			status = resp.StatusCode
		}
		if t.done != nil {
			t.done(status, connectFailed)
		}
		retry := attempt < t.attempts && ctx.Err() == nil && (err != nil && t.rt.RetryOn.Failure(kind) ||
			resp != nil && t.rt.RetryOn.Response(resp.StatusCode, grpcStatusOf(resp), resp.Header))
		if retry {
			if t.budget == nil || t.budget() {
				if resp != nil {
					io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
					resp.Body.Close()
				}
				tryCancel()
				t.retried(false)
				select {
				case <-time.After(retryBackoff(attempt)):
				case <-ctx.Done():
				}
				continue
			}
			t.retried(true)
		}
		if err != nil {
			tryCancel()
			if ctx.Err() != nil {
				return nil, nil, context.DeadlineExceeded
			}
			return nil, nil, err
		}
		return resp, tryCancel, nil
	}
}

// retryBackoff is the wait after attempt (0 for the first): from 25ms,
// doubling, capped at 250ms (Envoy's base_interval and its default
// max_interval), the upper half jittered. Uncapped, the ninth retry of a
// route with attempts: 10 waited up to 12.8s.
func retryBackoff(attempt int) time.Duration {
	b := retryBackoffMax
	if attempt < 10 {
		b = min(retryBackoffBase<<attempt, retryBackoffMax)
	}
	return b/2 + rand.N(b/2+1)
}

// failureKind classifies a transport error for retryOn.
func failureKind(err error) int {
	if err == nil {
		return -1
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return traffic.FailConnect
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "connection refused") || strings.Contains(msg, "tls:") || strings.Contains(msg, "handshake"):
		return traffic.FailConnect
	case strings.Contains(msg, "GOAWAY") || strings.Contains(msg, "REFUSED_STREAM"):
		return traffic.FailRefused
	}
	return traffic.FailReset
}

func grpcStatusOf(resp *http.Response) int {
	v := resp.Header.Get("Grpc-Status")
	if v == "" && resp.Trailer != nil {
		v = resp.Trailer.Get("Grpc-Status")
	}
	if v == "" {
		return -1
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return -1
	}
	return n
}
