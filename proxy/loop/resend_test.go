//go:build linux

package loop

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sigil-mesh/sigil/proxy/h1"
)

// statusServer answers every request with status and a body naming
// name, the path and the request's body, keeping its connections, and
// counts what it saw.
func statusServer(t *testing.T, name string, status int, requests *atomic.Int32) string {
	return rawUpstream(t, func(c net.Conn) {
		eachRequest(c, func(req *http.Request) bool {
			got, _ := io.ReadAll(req.Body)
			requests.Add(1)
			body := name + " " + req.URL.Path + " " + string(got)
			fmt.Fprintf(c, "HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s", status, len(body), body)
			return true
		})
	})
}

// resender is an Exchange that sends an answer with status on to next
// (once), counting what it was asked (every final answer: the one that
// came after a resend too) and how it ended.
type resender struct {
	status int
	next   Upstream
	asked  []int
	done   chan int
}

func (r *resender) Answered(status int, _ *h1.Head) Upstream {
	r.asked = append(r.asked, status)
	if status == r.status && r.next != nil {
		next := r.next
		r.next = nil
		return next
	}
	return nil
}

func (r *resender) Done(status int, err error) { r.done <- status }

// TestResender: an answer whose status the Exchange (a Resender) names
// is dropped and the request, its body too (Content-Length or chunked),
// sent to the Upstream it returns, where the answer the caller gets
// comes from; one it does not name is relayed; a request whose body is
// over ResendBodyLimit is never asked about (its body was not kept).
func TestResender(t *testing.T) {
	var failing, healthy atomic.Int32
	bad := &testUpstream{key: "bad", addr: statusServer(t, "bad", 503, &failing)}
	good := &testUpstream{key: "good", addr: statusServer(t, "good", 200, &healthy)}
	var current atomic.Pointer[resender]
	var limit int64 // ResendBodyLimit of the next fixture
	resendTo := func(next Upstream, status int) Handler {
		return handlerFunc(func(_ *Caller, h *h1.Head) Verdict {
			r := &resender{status: status, next: next, done: make(chan int, 1)}
			current.Store(r)
			return Verdict{Upstream: bad, Exchange: r}
		})
	}
	f := start(t, Config{Handler: resendTo(good, 503)}, "", false)
	c := f.caller()
	if status, body := c.get("/again"); status != 200 || body != "good /again " {
		t.Fatalf("resent: %d %q", status, body)
	}
	r := current.Load()
	if got := <-r.done; got != 200 || fmt.Sprint(r.asked) != "[503 200]" {
		t.Fatalf("Done(%d), asked %v", got, r.asked)
	}
	if failing.Load() != 1 || healthy.Load() != 1 {
		t.Fatalf("bad saw %d requests, good %d", failing.Load(), healthy.Load())
	}
	// The same connection goes on, with bodies.
	for _, req := range []string{
		"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
		"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	} {
		if _, err := io.WriteString(c.c, req); err != nil {
			t.Fatal(err)
		}
		resp, body := readResponse(t, c.br, "POST")
		if path, _, _ := strings.Cut(strings.TrimPrefix(req, "POST "), " "); resp.StatusCode != 200 || body != "good "+path+" abc" {
			t.Fatalf("%s: %d %q", path, resp.StatusCode, body)
		}
	}
	// Over the limit: the first answer stays, unasked.
	limit = 2
	f = start(t, Config{Handler: resendTo(good, 503), ResendBodyLimit: limit}, "", false)
	c = f.caller()
	if _, err := io.WriteString(c.c, "POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"); err != nil {
		t.Fatal(err)
	}
	if resp, body := readResponse(t, c.br, "POST"); resp.StatusCode != 503 || body != "bad /big abc" {
		t.Fatalf("over the limit: %d %q", resp.StatusCode, body)
	}
	if r := current.Load(); <-r.done != 503 || len(r.asked) != 0 {
		t.Fatalf("a request with a body over the limit was asked about: %v", r.asked)
	}
	// An upstream that hangs up before answering: asked with status 0.
	hangs := &testUpstream{key: "hangs", addr: rawUpstream(t, func(c net.Conn) {
		http.ReadRequest(bufio.NewReader(c))
		c.Close()
	})}
	f = start(t, Config{Handler: handlerFunc(func(_ *Caller, h *h1.Head) Verdict {
		r := &resender{status: 0, next: good, done: make(chan int, 1)}
		current.Store(r)
		return Verdict{Upstream: hangs, Exchange: r}
	})}, "", false)
	if status, body := f.caller().get("/reset"); status != 200 || body != "good /reset " {
		t.Fatalf("after a reset: %d %q", status, body)
	}
	if r := current.Load(); <-r.done != 200 || fmt.Sprint(r.asked) != "[0 200]" {
		t.Fatalf("after a reset, asked %v", r.asked)
	}
	// A status the Resender does not name is relayed.
	f = start(t, Config{Handler: resendTo(good, 500)}, "", false)
	if status, body := f.caller().get("/kept"); status != 503 || body != "bad /kept " {
		t.Fatalf("unnamed status: %d %q", status, body)
	}
}

// TestResendCopyLetGo: the copy of a request's body kept to send it
// again is let go with its exchange: a caller's connection that sent
// one large body does not hold a MiB for the rest of its life (an app
// with many such idle connections would hold that many).
func TestResendCopyLetGo(t *testing.T) {
	var healthy atomic.Int32
	good := &testUpstream{key: "good", addr: statusServer(t, "good", 200, &healthy)}
	var lp atomic.Pointer[Loop]
	kept := make(chan int, 4) // cap of the copy when the next request comes
	f := start(t, Config{Handler: handlerFunc(func(_ *Caller, h *h1.Head) Verdict {
		for _, s := range lp.Load().conns {
			if s != nil && s.isDown && s.x.awaiting {
				kept <- cap(s.x.again)
			}
		}
		return Verdict{Upstream: good, Exchange: &resender{status: -1, done: make(chan int, 1)}}
	})}, "", false)
	lp.Store(f.l)
	c := f.caller()
	body := strings.Repeat("x", 512<<10)
	if _, err := io.WriteString(c.c, fmt.Sprintf("POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(body), body)); err != nil {
		t.Fatal(err)
	}
	if resp, _ := readResponse(t, c.br, "POST"); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	<-kept // the first request's
	if status, _ := c.get("/next"); status != 200 {
		t.Fatal(status)
	}
	if n := <-kept; n > 64<<10 {
		t.Fatalf("the connection still holds %d bytes of its last request's copy", n)
	}
}

// errExchange records the error its exchange ended with.
type errExchange struct{ done chan error }

func (e errExchange) Done(_ int, err error) { e.done <- err }

// TestBadRequestBodyErr: a request whose body breaks before the answer
// began ends its exchange with ErrBadRequest (the caller's fault, which
// an Exchange must not count against the upstream).
func TestBadRequestBodyErr(t *testing.T) {
	var n atomic.Int32
	up := &testUpstream{key: "s", addr: statusServer(t, "s", 200, &n)}
	ex := errExchange{done: make(chan error, 1)}
	f := start(t, Config{Handler: handlerFunc(func(*Caller, *h1.Head) Verdict {
		return Verdict{Upstream: up, Exchange: ex}
	})}, "", false)
	c := f.caller()
	if _, err := io.WriteString(c.c, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"); err != nil {
		t.Fatal(err)
	}
	if err := <-ex.done; !errors.Is(err, ErrBadRequest) || !errors.Is(err, h1.ErrFraming) {
		t.Fatalf("Done(%v), want ErrBadRequest and the framing error", err)
	}
}
