package h2conn

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// dialFunc is a Dialer from a function.
type dialFunc func(ctx context.Context) (net.Conn, error)

func (f dialFunc) DialContext(ctx context.Context) (net.Conn, error) { return f(ctx) }

// serve starts srv on a loopback listener (TLS with cfg when not nil) and
// returns its address; everything stops at the test's end.
func serve(t testing.TB, srv *Server, cfg *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg != nil {
		ln = tls.NewListener(ln, cfg)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go srv.Serve(context.Background(), c)
		}
	}()
	t.Cleanup(func() { ln.Close(); srv.Close() })
	return ln.Addr().String()
}

// client is a Client of addr (TLS with cfg when not nil), closed at the
// test's end.
func client(t testing.TB, addr string, cfg *tls.Config, lim Limits) *Client {
	cl := &Client{Limits: lim, Dialer: dialFunc(func(ctx context.Context) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err != nil || cfg == nil {
			return c, err
		}
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, err
		}
		return tc, nil
	})}
	t.Cleanup(cl.Close)
	return cl
}

// tlsPair is a P-256 certificate for 127.0.0.1 in TLS 1.3 configs for a
// server and a client trusting it, both offering "h2".
func tlsPair(t testing.TB) (srv, cli *tls.Config) {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "h2conn"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	cert, pool := selfSigned(t, tmpl)
	srv = &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}, Certificates: []tls.Certificate{cert}}
	cli = &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}, RootCAs: pool, ServerName: "127.0.0.1"}
	return srv, cli
}

// selfSigned is tmpl signed by a new P-256 key of its own, and a pool
// that trusts it.
func selfSigned(t testing.TB, tmpl *x509.Certificate) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}, pool
}

// newReq is a request for path on the client's peer; body "" is none.
func newReq(t testing.TB, method, path, body string) *http.Request {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "https://peer"+path, r)
	if err != nil {
		t.Fatal(err)
	}
	return req
}
