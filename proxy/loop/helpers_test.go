//go:build linux

package loop

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/internal/testpki"
	"github.com/sigil-mesh/sigil/proxy/h1"
)

// waitFor is how long a test awaits something that should happen at
// once; a failure to happen shows as a timeout, not a hang.
const waitFor = 10 * time.Second

// testCerts returns a server configuration with a certificate for
// 127.0.0.1 from a CA made here, and the pool that trusts it.
func testCerts(t testing.TB) (*tls.Config, *x509.CertPool) {
	t.Helper()
	ca := testpki.NewAuthority(t)
	leaf, _ := ca.Leaf(t, &x509.Certificate{IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return &tls.Config{Certificates: []tls.Certificate{leaf}}, ca.Pool()
}

// fixture is a Loop in front of an upstream, with a listener that hands
// it every connection it accepts.
type fixture struct {
	t     *testing.T
	l     *Loop
	addr  string
	ln    net.Listener
	takes chan error // each Take's result
	pool  *x509.CertPool
	wg    sync.WaitGroup
}

// dialTo is a Config.Dial for addr.
func dialTo(addr string) func(context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
}

// start runs a Loop for cfg (Dial to upstream if not set and upstream
// is not "") and a
// listener in front of it; callers speak TLS if tlsCallers.
func start(t *testing.T, cfg Config, upstream string, tlsCallers bool) *fixture {
	t.Helper()
	return startWith(t, cfg, upstream, tlsCallers, nil)
}

// smallBuffers makes the kernel's buffers of a connection small, so
// that what the loop sends waits in its own queue (maxQueued), not in
// the kernel's.
func smallBuffers(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(16 << 10)
	}
}

// startWith is start with prep run on each accepted connection before
// Take.
func startWith(t *testing.T, cfg Config, upstream string, tlsCallers bool, prep func(net.Conn)) *fixture {
	t.Helper()
	if cfg.Dial == nil && upstream != "" {
		cfg.Dial = dialTo(upstream)
	}
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, l: l, addr: ln.Addr().String(), ln: ln, takes: make(chan error, 100)}
	var srvCfg *tls.Config
	if tlsCallers {
		srvCfg, f.pool = testCerts(t)
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if prep != nil {
				prep(c)
			}
			conn := Plain(c)
			if srvCfg != nil {
				conn = Server(c, srvCfg)
				c.SetDeadline(time.Now().Add(waitFor))
				if err := conn.TLS.HandshakeContext(context.Background()); err != nil {
					c.Close()
					continue
				}
				c.SetDeadline(time.Time{})
			}
			select {
			case f.takes <- l.Take(conn, "caller"):
			default:
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		f.wg.Wait()
		l.Close()
	})
	return f
}

// drainTakes forgets the results of the Takes so far.
func (f *fixture) drainTakes() {
	for {
		select {
		case <-f.takes:
		default:
			return
		}
	}
}

// client is an http.Client for f's callers.
func (f *fixture) client() *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}
	if f.pool != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: f.pool}
	}
	f.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: waitFor}
}

// url is f's address as a URL.
func (f *fixture) url(path string) string {
	if f.pool != nil {
		return "https://" + f.addr + path
	}
	return "http://" + f.addr + path
}

// dial is a raw connection to f, with a deadline.
func (f *fixture) dial() net.Conn {
	f.t.Helper()
	c, err := net.Dial("tcp", f.addr)
	if err != nil {
		f.t.Fatal(err)
	}
	c.(*net.TCPConn).SetReadBuffer(128 << 10) // over a loopback segment: no window stalls
	if f.pool != nil {
		c = tls.Client(c, &tls.Config{RootCAs: f.pool, ServerName: "127.0.0.1"})
	}
	c.SetDeadline(time.Now().Add(waitFor))
	f.t.Cleanup(func() { c.Close() })
	return c
}

// readResponse reads one response (whole body) from br.
func readResponse(t testing.TB, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading a response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading a response body: %v", err)
	}
	return resp, string(b)
}

// expectEOF asserts the connection under br ends (EOF or a reset), with
// nothing more to read.
func expectEOF(t testing.TB, br *bufio.Reader) {
	t.Helper()
	b, err := br.ReadByte()
	if err == nil {
		rest, _ := br.Peek(br.Buffered())
		t.Fatalf("read %q%q, want the connection closed", b, rest)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the connection is still open")
	}
}

// echo is an upstream handler: it answers "<method> <path> <body>" and
// reports the requests it got.
type echo struct {
	mu   sync.Mutex
	seen []string
}

func (e *echo) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	e.mu.Lock()
	e.seen = append(e.seen, r.Method+" "+r.URL.Path)
	e.mu.Unlock()
	for k, v := range r.Trailer {
		w.Header().Set("X-Got-Trailer-"+k, strings.Join(v, ","))
	}
	if v := r.Header.Get("X-Sigil"); v != "" {
		w.Header().Set("X-Saw-Sigil", v)
	}
	io.WriteString(w, r.Method+" "+r.URL.Path+" "+string(b))
}

func (e *echo) requests() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.seen...)
}

// upstream is an httptest server for h.
func upstream(t *testing.T, h http.Handler) *httptest.Server {
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

// done is one Exchange.Done call.
type done struct {
	status int
	err    error
}

// exchange records its Done calls.
type exchangeRec struct {
	mu    sync.Mutex
	calls []done
	ch    chan done
}

func newExchange() *exchangeRec { return &exchangeRec{ch: make(chan done, 10)} }

func (x *exchangeRec) Done(status int, err error) {
	x.mu.Lock()
	x.calls = append(x.calls, done{status, err})
	x.mu.Unlock()
	x.ch <- done{status, err}
}

// await returns the first Done call, and fails if another follows
// soon after (Done is once).
func (x *exchangeRec) await(t testing.TB) done {
	t.Helper()
	select {
	case d := <-x.ch:
		return d
	case <-time.After(waitFor):
		t.Fatal("Exchange.Done was not called")
	}
	return done{}
}

func (x *exchangeRec) count() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.calls)
}

// handlerFunc is a Handler from a function.
type handlerFunc func(c *Caller, h *h1.Head) Verdict

func (f handlerFunc) Request(c *Caller, h *h1.Head) Verdict { return f(c, h) }

// openFDs counts the process's open descriptors.
func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

// settle waits until cond holds, failing after waitFor.
func settle(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not so after %v", what, waitFor)
		}
		runtime.Gosched()
		time.Sleep(5 * time.Millisecond)
	}
}

// slowRead reads resp's body in small pieces with a pause between, and
// returns its hash and the error that ended it (nil at its end).
func slowRead(resp *http.Response, piece int, pause time.Duration) ([]byte, error) {
	h := sha256.New()
	buf := make([]byte, piece)
	for {
		n, err := resp.Body.Read(buf)
		h.Write(buf[:n])
		if err == io.EOF {
			return h.Sum(nil), nil
		}
		if err != nil {
			return h.Sum(nil), err
		}
		time.Sleep(pause)
	}
}

// rawUpstream accepts connections on a new listener and runs serve on
// each.
func rawUpstream(t *testing.T, serve func(c net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	return ln.Addr().String()
}
