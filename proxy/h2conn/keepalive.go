package h2conn

import (
	"errors"
	"time"

	"golang.org/x/net/http2"
)

var (
	errIdle        = errors.New("h2conn: connection idle")
	errPingTimeout = errors.New("h2conn: peer did not answer PING")
)

// streamsNow arms the idle timer when no stream is left and stops it
// when one opens; mu held.
func (c *conn) streamsNow() {
	if c.idleTimeout <= 0 {
		return
	}
	switch {
	case c.inUse > 0:
		if c.idleTimer != nil {
			c.idleTimer.Stop()
		}
	case c.idleTimer == nil:
		c.idleTimer = time.AfterFunc(c.idleTimeout, c.idleFired)
	default:
		c.idleTimer.Reset(c.idleTimeout)
	}
}

// idleFired closes a connection still idle, with GOAWAY so that the peer
// opens no stream on it meanwhile.
func (c *conn) idleFired() {
	c.mu.Lock()
	if c.inUse > 0 || c.err != nil || c.goingAway {
		c.mu.Unlock()
		return
	}
	c.goingAway = true
	last := c.lastRemote
	c.mu.Unlock()
	if c.w.enqueue(frame{kind: kGoAway, n: last, code: http2.ErrCodeNo}) == nil {
		c.w.flushed(time.Second)
	}
	c.close(errIdle)
}

// keepalive sends a PING when nothing was read for interval and closes
// the connection when nothing arrives within timeout after it.
func (c *conn) keepalive(interval, timeout time.Duration) {
	if timeout <= 0 {
		timeout = interval
	}
	var tick func(seen uint64)
	tick = func(seen uint64) {
		select {
		case <-c.done:
			return
		default:
		}
		n := c.framesRead.Load()
		if n != seen {
			time.AfterFunc(interval, func() { tick(n) })
			return
		}
		c.w.enqueue(frame{kind: kPingReq})
		time.AfterFunc(timeout, func() {
			if c.framesRead.Load() == n {
				c.close(errPingTimeout)
				return
			}
			tick(n)
		})
	}
	n := c.framesRead.Load()
	time.AfterFunc(interval, func() { tick(n) })
}
