package proxy

import (
	"errors"
	"net"

	"golang.org/x/sys/unix"
)

// originalDst reads where a connection redirected by iptables REDIRECT was
// going (SO_ORIGINAL_DST, IPv4).
func originalDst(c net.Conn) (*net.TCPAddr, error) {
	if ic, ok := c.(*idleConn); ok {
		c = ic.Conn
	}
	if cc, ok := c.(*countedConn); ok {
		c = cc.Conn
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil, errors.New("proxy: not a TCP connection")
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var addr *net.TCPAddr
	var optErr error
	err = raw.Control(func(fd uintptr) {
		// The kernel answers with a sockaddr_in; the IPv6 mreq getter is the
		// usual way to read those 16 bytes.
		mreq, err := unix.GetsockoptIPv6Mreq(int(fd), unix.IPPROTO_IP, unix.SO_ORIGINAL_DST)
		if err != nil {
			optErr = err
			return
		}
		b := mreq.Multiaddr
		addr = &net.TCPAddr{IP: net.IPv4(b[4], b[5], b[6], b[7]), Port: int(b[2])<<8 | int(b[3])}
	})
	if err != nil {
		return nil, err
	}
	return addr, optErr
}
