package traffic

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// RetryOn is a parsed retryOn: Envoy's conditions (x-envoy-retry-on and
// x-envoy-retry-grpc-on, the values Istio accepts) and HTTP statuses.
type RetryOn struct {
	FiveXX, GatewayError, ConnectFailure, Reset, Retriable4xx, RefusedStream bool
	// Codes are HTTP statuses to retry (numbers in retryOn, and 503 for
	// retriable-status-codes).
	Codes map[int]bool
	// GRPC are gRPC status codes to retry.
	GRPC map[int]bool
	// ResetBeforeRequest retries a request that failed before any of it
	// reached the peer (no connection, or a stream the peer refused): a
	// subset of Reset, safe for any method.
	ResetBeforeRequest bool
	// RateLimited retries a response carrying x-envoy-ratelimited
	// (envoy-ratelimited).
	RateLimited bool
}

// retryOnNames lists the retryOn values Istio accepts besides HTTP
// statuses, with what each sets. retriable-headers retries a response
// with a header the policy's retriable_headers or the request's
// x-envoy-retriable-header-names names: Istio's HTTPRetry sets none and
// the sidecar does not take retry instructions from the app, so it
// matches nothing, exactly as in Envoy without either list.
// http3-post-connect-failure concerns HTTP/3 upstreams, which sidecars
// never use: it matches nothing either.
var retryOnNames = map[string]func(*RetryOn){
	"5xx":                        func(r *RetryOn) { r.FiveXX = true },
	"gateway-error":              func(r *RetryOn) { r.GatewayError = true },
	"connect-failure":            func(r *RetryOn) { r.ConnectFailure = true },
	"reset":                      func(r *RetryOn) { r.Reset = true },
	"reset-before-request":       func(r *RetryOn) { r.ResetBeforeRequest = true },
	"retriable-4xx":              func(r *RetryOn) { r.Retriable4xx = true },
	"refused-stream":             func(r *RetryOn) { r.RefusedStream = true },
	"retriable-status-codes":     func(r *RetryOn) { r.Codes[503] = true },
	"retriable-headers":          func(*RetryOn) {},
	"envoy-ratelimited":          func(r *RetryOn) { r.RateLimited = true },
	"http3-post-connect-failure": func(*RetryOn) {},
	"cancelled":                  func(r *RetryOn) { r.GRPC[GRPCCodes["CANCELLED"]] = true },
	"deadline-exceeded":          func(r *RetryOn) { r.GRPC[GRPCCodes["DEADLINE_EXCEEDED"]] = true },
	"internal":                   func(r *RetryOn) { r.GRPC[GRPCCodes["INTERNAL"]] = true },
	"resource-exhausted":         func(r *RetryOn) { r.GRPC[GRPCCodes["RESOURCE_EXHAUSTED"]] = true },
	"unavailable":                func(r *RetryOn) { r.GRPC[GRPCCodes["UNAVAILABLE"]] = true },
}

// ParseRetryOn reads a comma-separated retryOn value by Istio's rule:
// each entry exactly one of its names or an HTTP status Go knows (no
// spaces, no empty entry); "" is no condition.
func ParseRetryOn(s string) (RetryOn, error) {
	r := RetryOn{Codes: map[int]bool{}, GRPC: map[int]bool{}}
	if s == "" {
		return r, nil
	}
	for _, tok := range strings.Split(s, ",") {
		if set, ok := retryOnNames[tok]; ok {
			set(&r)
			continue
		}
		if n, err := strconv.Atoi(tok); err == nil && http.StatusText(n) != "" && n >= 100 {
			r.Codes[n] = true
			continue
		}
		if t := strings.TrimSpace(tok); t != tok {
			return r, fmt.Errorf("traffic: %q has spaces: separate retry conditions by commas alone", tok)
		}
		return r, fmt.Errorf("traffic: %q is not a retry condition (%s, or an HTTP status)", tok, strings.Join(slices.Sorted(maps.Keys(retryOnNames)), ", "))
	}
	return r, nil
}

// DefaultRetryOn is Istio's default when a route sets no retries.
const DefaultRetryOn = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"

// DefaultAttempts is Istio's default number of retries.
const DefaultAttempts = 2

// Status reports whether a response with this HTTP status (and gRPC
// status, or -1) should be retried.
func (r RetryOn) Status(code, grpcStatus int) bool {
	switch {
	case r.FiveXX && code >= 500:
		return true
	case r.GatewayError && (code == 502 || code == 503 || code == 504):
		return true
	case r.Retriable4xx && code == 409:
		return true
	case r.Codes[code]:
		return true
	case grpcStatus > 0 && r.GRPC[grpcStatus]:
		return true
	}
	return false
}

// Response reports whether a response should be retried, as Envoy's
// router decides: one carrying x-envoy-ratelimited (an upstream Envoy's
// rate limit) only under envoy-ratelimited, whatever its status; any
// other by Status.
func (r RetryOn) Response(code, grpcStatus int, h http.Header) bool {
	if _, limited := h["X-Envoy-Ratelimited"]; limited {
		return r.RateLimited
	}
	return r.Status(code, grpcStatus)
}

// Failure kinds of a request that got no response.
const (
	FailConnect = iota // no connection could be made
	FailRefused        // the peer refused the stream (HTTP/2 GOAWAY or REFUSED_STREAM): it never ran
	FailReset          // the connection broke after the request was sent
	FailTimeout        // the attempt's per-try timeout passed before a response came
)

// Failure reports whether a request that got no response should be
// retried, as Envoy decides: 5xx and gateway-error cover every way of
// getting no response, since the proxy would answer it with a 502, 503 or
// 504 of its own (a per-try timeout is a 504); reset covers a broken
// stream, a failed connection and a per-try timeout ("does not respond at
// all"); reset-before-request only the failures before any of the
// request reached the peer.
func (r RetryOn) Failure(kind int) bool {
	switch kind {
	case FailConnect:
		return r.ConnectFailure || r.FiveXX || r.GatewayError || r.RefusedStream || r.Reset || r.ResetBeforeRequest
	case FailRefused:
		return r.RefusedStream || r.ConnectFailure || r.Reset || r.FiveXX || r.GatewayError || r.ResetBeforeRequest
	}
	return r.Reset || r.FiveXX || r.GatewayError
}
