// Package h2abuse decides when the frames an HTTP/2 peer sends are a
// flood: frames that cost the receiver work but move no request forward.
// Both of Sigil's HTTP/2 servers (the frame guard in front of Go's server,
// and proxy/h2conn between sidecars) count with a Counter, so both paths
// judge a peer alike.
//
// # The rule
//
// RST_STREAM frames are counted per window (rapid reset, CVE-2023-44487)
// against maxResets plus the streams the peer opened in the window and did
// not reset: a client may reset up to half its streams beyond maxResets,
// as Envoy closes a connection only when more than half of its streams
// were reset prematurely (premature_reset_total_stream_count). A client
// whose calls run into their deadlines now and then (grpc-go sends
// RST_STREAM CANCEL for each) is not cut off for being busy; one that
// resets every stream it opens still is, at maxResets.
//
// Control frames (SETTINGS and PING without ACK, PRIORITY, WINDOW_UPDATE of
// zero, empty DATA without END_STREAM) are free when earned, and counted
// per window when not. A control frame is earned by progress on the
// connection: each HEADERS or DATA frame the server sends the peer, and
// each stream the peer opens, earns one. Within a window a peer may send
// maxControl control frames more than it earned in that window; past
// that, the connection is a flood.
//
// This is grpc-go's server rule for pings (keepalive EnforcementPolicy:
// a ping after the server sent HEADERS or DATA is never a strike, so BDP
// estimation, which pings once per round trip while data arrives, is
// always allowed) widened to every control frame as Envoy bounds them
// against useful frames (max_inbound_priority_frames_per_stream counts
// PRIORITY per stream opened, max_inbound_window_update_frames_per_data_frame_sent
// WINDOW_UPDATE per DATA frame sent). A plain count per window, as Sigil
// had, cut off well-behaved grpc-go clients within seconds under load.
//
// A peer that floods PINGs and never reads the ACKs is closed by the same
// rule (nothing it sends is earned), as Go's server
// (maxQueuedControlFrames, 10,000 ACKs queued unwritten) and nghttp2
// (1,000 outbound ACKs queued) close it by theirs. One that reads its
// ACKs but opens no requests, which those two let run forever at a read
// and a write per ping, is closed too, as grpc-go closes it
// (too_many_pings).
//
// Earned frames do not carry over from one window to the next: a long
// download does not buy a burst of control frames later.
package h2abuse

import (
	"sync/atomic"
	"time"
)

// Counter counts one connection's frames against its limits. Progress may
// be called from any goroutine (the server's writer); Reset and Control
// from the connection's reading goroutine only.
type Counter struct {
	maxResets, maxControl int
	window                time.Duration
	now                   func() time.Time

	progress atomic.Int64 // frames that earned a control frame, ever

	since                   time.Time // the window's start
	resets, control, opened int       // in the window
	base                    int64     // progress at the window's start
}

// NewCounter counts against maxResets RST_STREAM frames and maxControl
// unearned control frames per window (a limit <= 0 is no limit), with now
// as its clock (time.Now if nil).
func NewCounter(maxResets, maxControl int, window time.Duration, now func() time.Time) *Counter {
	if now == nil {
		now = time.Now
	}
	return &Counter{maxResets: maxResets, maxControl: maxControl, window: window, now: now, since: now()}
}

// Progress records a frame that earns one control frame: a HEADERS or
// DATA frame sent to the peer.
func (c *Counter) Progress() { c.progress.Add(1) }

// Opened records a stream the peer opened (its first HEADERS frame): it
// earns one control frame, and one reset if the stream is not reset.
// Reading goroutine only.
func (c *Counter) Opened() {
	c.opened++
	c.progress.Add(1)
}

// Reset counts one RST_STREAM frame from the peer and reports whether the
// window's resets went past the limit plus the window's streams not
// reset.
func (c *Counter) Reset() bool {
	c.resets++
	if c.maxResets <= 0 || c.resets <= c.maxResets {
		return false
	}
	if c.newWindow(&c.resets) {
		return false
	}
	return c.resets-c.maxResets > c.opened-c.resets
}

// Control counts one control frame from the peer and reports whether the
// window's control frames went past the limit plus what the window
// earned. The clock is read only past the plain limit, so counting costs
// nothing on the common path.
func (c *Counter) Control() bool {
	c.control++
	if c.maxControl <= 0 || c.control <= c.maxControl {
		return false
	}
	if c.newWindow(&c.control) {
		return false
	}
	return int64(c.control-c.maxControl) > c.progress.Load()-c.base
}

// newWindow starts a new window if the current one is over, with count's
// frame (the one in hand) as its first, and reports whether it did.
func (c *Counter) newWindow(count *int) bool {
	now := c.now()
	if now.Sub(c.since) < c.window {
		return false
	}
	c.since, c.resets, c.control, c.opened, c.base = now, 0, 0, 0, c.progress.Load()
	*count = 1
	return true
}
