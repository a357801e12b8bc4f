//go:build unix

package h1

import (
	"net"
	"syscall"
)

// idlePeek looks at an idle connection's socket without reading from it:
// one non-blocking MSG_PEEK, no goroutine. net/http's Transport keeps a
// read pending on every idle connection to notice a close or stray bytes;
// asking the socket when the connection is taken from the pool learns the
// same at the one moment it matters, for a system call instead of a
// goroutine and a wake-up per request.
type idlePeek struct {
	raw   syscall.RawConn
	fn    func(fd uintptr) bool // made once, so a check allocates nothing
	state idleState
	buf   [1]byte
}

func newIdlePeek(c net.Conn) idlePeek {
	// TLS, and the sidecar's own wrappers (a connection cap's slot, say):
	// the bytes unread are on the socket below them all.
	for range 4 {
		w, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = w.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return idlePeek{}
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return idlePeek{}
	}
	return idlePeek{raw: raw}
}

func (p *idlePeek) check() idleState {
	if p.raw == nil {
		return idleUnknown
	}
	if p.fn == nil {
		p.fn = func(fd uintptr) bool {
			n, _, err := syscall.Recvfrom(int(fd), p.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			switch {
			case n > 0:
				p.state = idleData
			case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK || err == syscall.EINTR:
				p.state = idleQuiet
			default: // 0 bytes: the peer closed; or an error such as a reset
				p.state = idleClosed
			}
			return true
		}
	}
	p.state = idleUnknown
	if p.raw.Read(p.fn) != nil {
		return idleClosed
	}
	return p.state
}
