package h2conn

import (
	"errors"

	"golang.org/x/net/http2"
)

// ResetError is a stream ended by RST_STREAM (from the peer, or sent
// because of a local failure), with its RFC 9113 error code.
type ResetError struct{ Code http2.ErrCode }

func (e ResetError) Error() string { return "h2conn: stream reset: " + e.Code.String() }

// ErrRefused is a request the peer did not process: its stream was
// refused (REFUSED_STREAM) or came after the peer's GOAWAY. It is safe to
// send again on another connection, whatever its method.
var ErrRefused = errors.New("h2conn: stream refused by the peer (REFUSED_STREAM, or after its GOAWAY), not processed")

// ErrNotSent is a request whose connection ended before any byte of its
// HEADERS was written to it (the connection already failed, or failed
// with the request still queued): the peer never saw it, so it is safe to
// send again on another connection, whatever its method (net/http's
// "nothing written" rule).
var ErrNotSent = errors.New("h2conn: connection ended before the request was written, not processed")

// IsUnprocessed reports whether err is a request the peer cannot have
// processed (ErrRefused or ErrNotSent): one a client may send again on
// another connection, whatever its method and independent of any retry
// policy, as Go's HTTP/2 transport does (errClientConnUnusable,
// errClientConnGotGoAway, REFUSED_STREAM) and Envoy's refused-stream and
// reset-before-request retries.
func IsUnprocessed(err error) bool {
	return errors.Is(err, ErrRefused) || errors.Is(err, ErrNotSent)
}

// errEnhanceYourCalm closes a connection whose peer broke the frame limits.
var errEnhanceYourCalm = errors.New("h2conn: peer sent too many resets or control frames (ENHANCE_YOUR_CALM)")

// Reasons a connection is closed for abuse, given to OnAbuse (the same
// values as the proxy's sigil_http2_connections_closed_total reason label).
const (
	ReasonRapidReset   = "rapid_reset"
	ReasonControlFlood = "control_frame_flood"
)
