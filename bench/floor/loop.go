package main

import (
	"context"
	"crypto/tls"
	"log"
	"net"
	"time"

	"github.com/sigil-mesh/sigil/proxy/loop"
)

// handshakeTimeout bounds a caller's TLS handshake, as proxy/h1's header
// timeout bounds a request head.
const handshakeTimeout = 10 * time.Second

// runLoop serves ln with the -loop data path (package proxy/loop, with
// no Handler: every request forwarded as received) until Accept fails.
// In client mode callers' connections are plain and upstream ones mTLS
// (cfg); in server mode the reverse, and a caller is authenticated
// before anything is dialed (the loop dials on the first request).
func runLoop(mode string, ln net.Listener, cfg *tls.Config, upstream string, to timeouts) error {
	var d net.Dialer
	lc := loop.Config{
		Dial:          func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", upstream) },
		HeaderTimeout: to.header, IdleTimeout: to.idle,
	}
	if mode == "client" {
		lc.UpstreamTLS = cfg
	}
	l, err := loop.New(lc)
	if err != nil {
		return err
	}
	defer l.Close()
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			conn := loop.Plain(c)
			if mode == "server" {
				conn = loop.Server(c, cfg)
				ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
				err := conn.TLS.HandshakeContext(ctx)
				cancel()
				if err != nil {
					log.Printf("floor: handshake: %v", err)
					c.Close()
					return
				}
			}
			if err := l.Take(conn, nil); err != nil {
				log.Printf("floor: %v", err)
			}
		}()
	}
}
