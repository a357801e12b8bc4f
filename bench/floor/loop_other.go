//go:build !linux

package main

import (
	"crypto/tls"
	"errors"
	"net"
)

func runLoop(mode string, ln net.Listener, cfg *tls.Config, upstream string, to timeouts) error {
	return errors.New("floor: -loop needs Linux (epoll)")
}

type poller struct{}

func newPoller() (*poller, error) {
	return nil, errors.New("floor: -path pollconn needs Linux (epoll)")
}

func (*poller) wrap(c net.Conn) (net.Conn, error) { return c, nil }
