package h2conn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// notAfterConn is a TLS connection that says when it may carry streams.
type notAfterConn struct {
	*tls.Conn
	at time.Time
}

func (c notAfterConn) NotAfter() time.Time { return c.at }

// TestConnectionRetiredBeforeCertificateExpiry: a connection stops taking
// streams a second before the earlier of its peer certificate's expiry
// and its own NotAfter (the certificate this side presented); the next
// request goes on a new connection, and the old one closes once idle. A
// connection dialled for a request takes it even that near its expiry
// (no endless redialling when no newer certificate exists yet).
func TestConnectionRetiredBeforeCertificateExpiry(t *testing.T) {
	srvCfg, cliCfg := tlsPair(t)
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
	addr := serve(t, srv, srvCfg)
	// The test's certificate expires in an hour.
	peerExpiry := time.Now().Add(time.Hour)
	for _, tc := range []struct {
		name     string
		own      time.Time // zero: the dialled connection says nothing
		retireAt time.Time // when a connection stops taking streams
	}{
		{"peer certificate", time.Time{}, peerExpiry},
		{"own certificate first", time.Now().Add(10 * time.Minute), time.Now().Add(10 * time.Minute)},
		{"peer certificate first", time.Now().Add(2 * time.Hour), peerExpiry},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var clock atomic.Pointer[time.Time]
			start := time.Now()
			clock.Store(&start)
			var dials atomic.Int32
			plain := client(t, addr, cliCfg, Limits{})
			cl := &Client{Dialer: dialFunc(func(ctx context.Context) (net.Conn, error) {
				dials.Add(1)
				c, err := plain.Dialer.DialContext(ctx)
				if err != nil || tc.own.IsZero() {
					return c, err
				}
				return notAfterConn{Conn: c.(*tls.Conn), at: tc.own}, nil
			}), now: func() time.Time { return *clock.Load() }}
			t.Cleanup(cl.Close)
			get := func() {
				t.Helper()
				resp, err := cl.RoundTrip(newReq(t, "GET", "/", ""))
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
			}
			get()
			cl.mu.Lock()
			first := cl.conns[0]
			cl.mu.Unlock()
			// Within the margin of the expiry (a peer certificate's
			// NotAfter is stored to the second).
			for _, at := range []time.Time{tc.retireAt.Add(-2 * time.Second), tc.retireAt.Add(-500 * time.Millisecond)} {
				clock.Store(&at)
				get()
			}
			if n := dials.Load(); n != 2 {
				t.Errorf("%d dials, want 2 (one more at the expiry's margin, none before)", n)
			}
			select {
			case <-first.done:
			case <-time.After(10 * time.Second):
				t.Error("the retired connection is still open")
			}
			// The new connection, as near its expiry, took the request
			// it was dialled for, and takes no other.
			get()
			if n := dials.Load(); n != 3 {
				t.Errorf("%d dials, want 3", n)
			}
		})
	}
}

// TestServerRefusesStreamsPastClientExpiry: as proxy/h1's server, the
// server opens no stream once the client's certificate has expired on a
// connection made while it was valid: the stream is refused
// (REFUSED_STREAM, so the client knows it was not processed) and the
// connection goes away; the handler never runs.
func TestServerRefusesStreamsPastClientExpiry(t *testing.T) {
	srvCfg, cliCfg := tlsPair(t)
	clientExpiry := time.Now().Add(time.Hour).Truncate(time.Second)
	cert, pool := selfSigned(t, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "client"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: clientExpiry, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	srvCfg.ClientAuth, srvCfg.ClientCAs = tls.RequireAndVerifyClientCert, pool
	cliCfg.Certificates = []tls.Certificate{cert}

	var clock atomic.Pointer[time.Time]
	start := time.Now()
	clock.Store(&start)
	var served atomic.Int32
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served.Add(1) }),
		now: func() time.Time { return *clock.Load() }}
	addr := serve(t, srv, srvCfg)
	cl := client(t, addr, cliCfg, Limits{})
	get := func() error {
		resp, err := cl.RoundTrip(newReq(t, "GET", "/", ""))
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := get(); err != nil || served.Load() != 1 {
		t.Fatalf("before expiry: %v, %d served", err, served.Load())
	}
	after := clientExpiry.Add(time.Second)
	clock.Store(&after)
	if err := get(); err == nil || served.Load() != 1 {
		t.Fatalf("past the client's expiry: %v, %d served; want refused, 1", err, served.Load())
	}
	// The client's renewed certificate (here: the clock back) is served
	// on a new connection.
	clock.Store(&start)
	if err := get(); err != nil || served.Load() != 2 {
		t.Fatalf("after renewal: %v, %d served", err, served.Load())
	}
}
