//go:build linux

package loop

import (
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// handoff gives caller-facing side s back to goroutines (Config.Handoff)
// at a request boundary: what is staged for it is sealed, its socket
// leaves the epoll set for Go's poller, the upstream connection (idle:
// no exchange is in flight) is closed, and the pair leaves the loop.
func (l *Loop) handoff(s *side) {
	if s.tc != nil && len(s.pend) > 0 {
		if _, err := s.tc.Write(s.pend); err != nil {
			l.closePair(s, ErrHungUp)
			return
		}
		s.pend = s.pend[:0]
	}
	f := os.NewFile(uintptr(s.fd), "handed-off")
	nc, err := net.FileConn(f) // a descriptor of its own, on Go's poller
	if err != nil {
		l.closePair(s, err)
		return
	}
	// Leave the loop: the side's descriptor closes (f), its pair ends,
	// and neither is reported again.
	l.conns[s.fd] = nil
	unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, s.fd, nil)
	f.Close()
	s.fd, s.dead = -1, true
	l.live--
	up := s.peer
	if !up.dead {
		up.dead = true
		if up.adopted {
			unix.Close(up.fd)
			l.conns[up.fd] = nil
			if up.owner != nil {
				up.owner.Close()
			}
		}
	}
	prefix := append([]byte(nil), s.in[s.off:]...)
	out := append([]byte(nil), s.out...)
	var sock net.Conn = nc
	if l.cfg.HandoffWrap != nil {
		sock = l.cfg.HandoffWrap(nc)
	}
	var conn net.Conn = sock
	if s.tc != nil {
		conn = s.tc
	}
	hc := &handedConn{Conn: conn, prefix: prefix, owner: s.owner}
	bc := s.bc
	go func() {
		if len(out) > 0 {
			if _, err := nc.Write(out); err != nil {
				hc.Close()
				return
			}
		}
		if bc != nil {
			bc.nc = sock // crypto/tls reads what the loop had not decrypted, then the socket
		}
		l.cfg.Handoff(hc, s.caller.Value)
	}()
}
