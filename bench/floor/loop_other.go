//go:build !linux

package main

import (
	"crypto/tls"
	"errors"
	"net"
)

func runLoop(mode string, ln net.Listener, cfg *tls.Config, upstream string) error {
	return errors.New("floor: -loop needs Linux (epoll)")
}
