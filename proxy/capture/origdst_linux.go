package capture

import (
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// OriginalDst reads where a connection redirected by iptables REDIRECT was
// going (SO_ORIGINAL_DST, IPv4). c is the accepted socket itself (a
// *net.TCPConn), not a wrapper around it.
func OriginalDst(c syscall.Conn) (*net.TCPAddr, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("capture: original destination: %w", err)
	}
	var addr *net.TCPAddr
	var optErr error
	err = raw.Control(func(fd uintptr) {
		// The kernel answers with a sockaddr_in; the IPv6 mreq getter is the
		// usual way to read those 16 bytes.
		mreq, err := unix.GetsockoptIPv6Mreq(int(fd), unix.IPPROTO_IP, unix.SO_ORIGINAL_DST)
		if err != nil {
			optErr = fmt.Errorf("capture: original destination: %w", err)
			return
		}
		b := mreq.Multiaddr
		addr = &net.TCPAddr{IP: net.IPv4(b[4], b[5], b[6], b[7]), Port: int(b[2])<<8 | int(b[3])}
	})
	if err != nil {
		return nil, fmt.Errorf("capture: original destination: %w", err)
	}
	return addr, optErr
}
