package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
)

// tcpULP is TCP_ULP from linux/tcp.h: attach an upper-layer protocol
// ("tls" for kernel TLS, Documentation/networking/tls.rst) to a socket.
const tcpULP = 31

// ktlsProbe reports whether this kernel offers kernel TLS: it attaches
// the "tls" upper-layer protocol to a connected loopback TCP socket, the
// first step before TLS_TX/TLS_RX are set. It installs no keys and sends
// no bytes. The kernel's list of loaded ULPs is appended where readable.
func ktlsProbe() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "not probed: " + err.Error()
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return "not probed: " + err.Error()
	}
	defer c.Close()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return "not probed: " + err.Error()
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptString(int(fd), syscall.IPPROTO_TCP, tcpULP, "tls")
	}); err != nil {
		return "not probed: " + err.Error()
	}
	v := ktlsVerdict(serr)
	if b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_available_ulp"); err == nil {
		v += "; tcp_available_ulp: " + strings.TrimSpace(string(b))
	}
	return v
}

// ktlsVerdict says what setsockopt(TCP_ULP, "tls") answering err means.
func ktlsVerdict(err error) string {
	switch {
	case err == nil:
		return "available (TCP_ULP tls accepted)"
	case errors.Is(err, syscall.ENOENT):
		return "unavailable: no tls upper-layer protocol in this kernel (CONFIG_TLS off or the tls module not loaded; TCP_ULP gives ENOENT)"
	case errors.Is(err, syscall.ENOPROTOOPT):
		return "unavailable: the kernel has no TCP_ULP (before Linux 4.13; ENOPROTOOPT)"
	case errors.Is(err, syscall.EEXIST):
		return "available (a ULP was already attached: EEXIST)"
	default:
		return fmt.Sprintf("unavailable: setsockopt(TCP_ULP, tls): %v", err)
	}
}
