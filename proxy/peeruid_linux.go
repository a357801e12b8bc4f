package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Sizes of the sock_diag structures (linux/inet_diag.h).
const (
	sizeofNlMsghdr     = 16
	sizeofInetDiagReq  = 56 // struct inet_diag_req_v2
	sizeofInetDiagMsg  = 72 // struct inet_diag_msg
	inetDiagNoCookie   = 0xffffffff
	inetDiagSockIDLen  = 48
	inetDiagUIDOffset  = 4 + inetDiagSockIDLen + 12
	inetDiagAllStates  = 0xffffffff
	sockDiagRecvBuffer = 8192
)

var diagSeq atomic.Uint32

// peerUID reports the uid owning the other end of a TCP connection over
// loopback: the kernel's record of the socket (NETLINK_SOCK_DIAG, as `ss -e`
// reads it), not anything the peer says. The peer must be a local socket;
// an error means the owner is unknown (the caller refuses).
func peerUID(c net.Conn) (uint32, error) {
	uid, _, err := peerSocket(c)
	return uid, err
}

// peerSocket reports the uid and inode of the peer's socket (see peerUID).
func peerSocket(c net.Conn) (uid, inode uint32, err error) {
	local, ok1 := c.LocalAddr().(*net.TCPAddr)
	remote, ok2 := c.RemoteAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return 0, 0, errors.New("proxy: peer uid: not a TCP connection")
	}
	// The peer's socket: its source is our remote end, its destination
	// our local end.
	src, dst := remote.AddrPort(), local.AddrPort()
	family := uint8(unix.AF_INET)
	if !src.Addr().Unmap().Is4() || !dst.Addr().Unmap().Is4() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return 0, 0, fmt.Errorf("proxy: peer uid: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.Timeval{Sec: 1}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)

	seq := diagSeq.Add(1)
	req := make([]byte, sizeofNlMsghdr+sizeofInetDiagReq)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST)
	ne.PutUint32(req[8:], seq)
	r := req[sizeofNlMsghdr:]
	r[0], r[1] = family, unix.IPPROTO_TCP
	ne.PutUint32(r[4:], inetDiagAllStates)
	putSockID(r[8:], family, src, dst)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, 0, fmt.Errorf("proxy: peer uid: sock_diag request: %w", err)
	}
	buf := make([]byte, sockDiagRecvBuffer)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return 0, 0, fmt.Errorf("proxy: peer uid: sock_diag answer: %w", err)
		}
		for msg := buf[:n]; len(msg) >= sizeofNlMsghdr; {
			l := int(ne.Uint32(msg[0:]))
			typ := ne.Uint16(msg[4:])
			mseq := ne.Uint32(msg[8:])
			if l < sizeofNlMsghdr || l > len(msg) {
				return 0, 0, errors.New("proxy: peer uid: malformed sock_diag answer")
			}
			body := msg[sizeofNlMsghdr:l]
			msg = msg[(l+3)&^3:]
			if mseq != seq {
				continue
			}
			switch typ {
			case unix.NLMSG_DONE:
				return 0, 0, errors.New("proxy: peer uid: no local socket is the peer (not a connection from this host)")
			case unix.NLMSG_ERROR:
				if len(body) >= 4 {
					if e := int32(ne.Uint32(body)); e != 0 {
						return 0, 0, fmt.Errorf("proxy: peer uid: sock_diag: %w", unix.Errno(-e))
					}
				}
				return 0, 0, errors.New("proxy: peer uid: no local socket is the peer")
			case unix.SOCK_DIAG_BY_FAMILY:
				if len(body) < sizeofInetDiagMsg {
					return 0, 0, errors.New("proxy: peer uid: short sock_diag answer")
				}
				return ne.Uint32(body[inetDiagUIDOffset:]), ne.Uint32(body[inetDiagUIDOffset+4:]), nil
			}
		}
	}
}

// putSockID writes a struct inet_diag_sockid: ports and addresses in
// network order, no interface, no cookie.
func putSockID(b []byte, family uint8, src, dst netip.AddrPort) {
	binary.BigEndian.PutUint16(b[0:], src.Port())
	binary.BigEndian.PutUint16(b[2:], dst.Port())
	put := func(to []byte, a netip.Addr) {
		if family == unix.AF_INET {
			v := a.Unmap().As4()
			copy(to, v[:])
			return
		}
		v := a.As16()
		copy(to, v[:])
	}
	put(b[4:20], src.Addr())
	put(b[20:36], dst.Addr())
	binary.NativeEndian.PutUint32(b[40:], inetDiagNoCookie)
	binary.NativeEndian.PutUint32(b[44:], inetDiagNoCookie)
}

// peerGroups lists the effective and supplementary gids of the processes
// holding the socket with inode (from /proc/PID/fd and /proc/PID/status);
// none found is an error.
func peerGroups(inode uint32) ([]uint32, error) {
	target := fmt.Sprintf("socket:[%d]", inode)
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("proxy: peer gid: %w", err)
	}
	for _, p := range procs {
		if p.Name()[0] < '0' || p.Name()[0] > '9' {
			continue
		}
		fds, err := os.ReadDir("/proc/" + p.Name() + "/fd")
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if l, err := os.Readlink("/proc/" + p.Name() + "/fd/" + fd.Name()); err != nil || l != target {
				continue
			}
			status, err := os.ReadFile("/proc/" + p.Name() + "/status")
			if err != nil {
				return nil, fmt.Errorf("proxy: peer gid: %w", err)
			}
			return groupsOf(string(status))
		}
	}
	return nil, errors.New("proxy: peer gid: no process holds the peer socket")
}

// groupsOf reads the effective gid and the supplementary groups from a
// /proc/PID/status text.
func groupsOf(status string) ([]uint32, error) {
	var out []uint32
	for _, line := range strings.Split(status, "\n") {
		name, rest, _ := strings.Cut(line, ":")
		f := strings.Fields(rest)
		switch {
		case name == "Gid" && len(f) >= 2:
			f = f[1:2] // effective
		case name == "Groups":
		default:
			continue
		}
		for _, g := range f {
			v, err := strconv.ParseUint(g, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("proxy: peer gid: status %q: %w", line, err)
			}
			out = append(out, uint32(v))
		}
	}
	if len(out) == 0 {
		return nil, errors.New("proxy: peer gid: no Gid line in the process status")
	}
	return out, nil
}
