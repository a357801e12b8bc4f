package traffic

import (
	"fmt"
	"strconv"
	"strings"
)

// RetryOn is a parsed retryOn: Envoy's conditions and gRPC status names.
type RetryOn struct {
	FiveXX, GatewayError, ConnectFailure, Reset, Retriable4xx, RefusedStream bool
	// Codes are HTTP statuses to retry (numbers in retryOn, and 503 for
	// retriable-status-codes).
	Codes map[int]bool
	// GRPC are gRPC status codes to retry.
	GRPC map[int]bool
}

// ParseRetryOn reads a comma-separated retryOn value.
func ParseRetryOn(s string) (RetryOn, error) {
	r := RetryOn{Codes: map[int]bool{}, GRPC: map[int]bool{}}
	for _, tok := range strings.Split(s, ",") {
		tok = strings.TrimSpace(tok)
		switch tok {
		case "":
		case "5xx":
			r.FiveXX = true
		case "gateway-error":
			r.GatewayError = true
		case "connect-failure":
			r.ConnectFailure = true
		case "reset":
			r.Reset = true
		case "retriable-4xx":
			r.Retriable4xx = true
		case "refused-stream":
			r.RefusedStream = true
		case "retriable-status-codes":
			r.Codes[503] = true
		case "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable":
			r.GRPC[GRPCCodes[strings.ToUpper(strings.ReplaceAll(tok, "-", "_"))]] = true
		default:
			n, err := strconv.Atoi(tok)
			if err != nil || n < 100 || n > 599 {
				return r, fmt.Errorf("traffic: %q is not a retry condition (5xx, gateway-error, connect-failure, reset, retriable-4xx, refused-stream, retriable-status-codes, an HTTP status, or cancelled, deadline-exceeded, internal, resource-exhausted, unavailable)", tok)
			}
			r.Codes[n] = true
		}
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
// stream and a per-try timeout ("does not respond at all").
func (r RetryOn) Failure(kind int) bool {
	switch kind {
	case FailConnect:
		return r.ConnectFailure || r.FiveXX || r.GatewayError || r.RefusedStream
	case FailRefused:
		return r.RefusedStream || r.ConnectFailure || r.Reset || r.FiveXX || r.GatewayError
	}
	return r.Reset || r.FiveXX || r.GatewayError
}
