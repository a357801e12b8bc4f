package hop

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/sigil-mesh/sigil/protocol"
)

// gRPC status codes the sidecar answers with itself
// (https://github.com/grpc/grpc/blob/master/doc/statuscodes.md).
const (
	grpcCancelled        = "1"
	grpcDeadlineExceeded = "4"
	grpcPermissionDenied = "7"
	grpcInternal         = "13"
	grpcUnavailable      = "14"
)

// maxGRPCTimeoutDigits is the gRPC over HTTP/2 limit on grpc-timeout's
// value: "TimeoutValue → {positive integer as ASCII string of at most 8
// digits}" (PROTOCOL-HTTP2.md).
const maxGRPCTimeoutDigits = 8

// grpcTimeout reads a grpc-timeout header: 1 to 8 digits and a unit, H
// (hours), M, S, m (milliseconds), u or n. ok is false when it is absent
// or malformed (the request then has no deadline of its own, as with
// grpc-go's servers, which refuse such a call themselves).
func grpcTimeout(h http.Header) (d time.Duration, ok bool) {
	v := h.Get("Grpc-Timeout")
	if len(v) < 2 || len(v) > maxGRPCTimeoutDigits+1 {
		return 0, false
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	var n int64
	for i := 0; i < len(v)-1; i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	// 99999999H overflows a Duration: cap it, a deadline that far is none.
	if n > int64((1<<63-1)/unit) {
		return 1<<63 - 1, true
	}
	return time.Duration(n) * unit, true
}

// WithGRPCDeadline bounds a gRPC request's context by the caller's
// grpc-timeout counted from when the request arrived, so every step after
// (pool, retries, the upstream, the app) stops when the caller's deadline
// passes and the sidecar's own answer is DEADLINE_EXCEEDED (Envoy does the
// same with max_grpc_timeout). Other requests are returned unchanged.
func WithGRPCDeadline(r *http.Request, arrived time.Time) (*http.Request, context.CancelFunc) {
	d, ok := grpcTimeout(r.Header)
	if !ok {
		return r, func() {}
	}
	ctx, cancel := context.WithDeadline(r.Context(), arrived.Add(d))
	return r.WithContext(ctx), cancel
}

// GRPCFailureStatus is the gRPC status of a failure the sidecar answers
// for itself, with code the HTTP status it would give an HTTP caller. The
// caller's own deadline or cancellation decides first: DEADLINE_EXCEEDED
// once the caller's deadline has passed, CANCELLED when the caller went
// away, whatever failed on the way (the gRPC spec's "HTTP to gRPC Status
// Code Mapping" applies to the rest).
func GRPCFailureStatus(r *http.Request, code int) string {
	ctx := r.Context()
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return grpcDeadlineExceeded
	}
	if ctx.Err() != nil {
		return grpcCancelled
	}
	switch code {
	case http.StatusForbidden:
		return grpcPermissionDenied
	case http.StatusBadRequest:
		// gRPC's mapping of 400: a malformed request is not worth a retry.
		return grpcInternal
	case http.StatusGatewayTimeout:
		// The route's own timeout: a deadline, not an outage.
		return grpcDeadlineExceeded
	}
	return grpcUnavailable
}

// ProtocolOf is the protocol a request speaks as the policy names it:
// protocol.GRPC when its Content-Type is application/grpc (with or
// without a +proto or +json suffix), else protocol.HTTP.
func ProtocolOf(r *http.Request) string {
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		return protocol.GRPC
	}
	return protocol.HTTP
}

// GRPCTrailersOnly turns a gRPC "trailers-only" response (status in the
// headers, no body) into headers plus trailers. A proxy that streams must
// flush headers at once, and headers flushed without END_STREAM would leave
// the status where gRPC clients no longer look for it.
func GRPCTrailersOnly(resp *http.Response) error {
	if resp.Header.Get("Grpc-Status") == "" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/grpc") {
		return nil
	}
	if resp.Trailer == nil {
		resp.Trailer = http.Header{}
	}
	for _, k := range []string{"Grpc-Status", "Grpc-Message", "Grpc-Status-Details-Bin"} {
		if v, ok := resp.Header[k]; ok {
			resp.Trailer[k] = v
			resp.Header.Del(k)
		}
	}
	return nil
}
