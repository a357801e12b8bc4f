//go:build linux

package loop

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/proxy/h1"
)

// deferring is a Handler that decides /slow… requests on Decide's
// goroutine, each once release is closed, with decide's Verdict (its
// Exchange ex); the rest it forwards at once.
type deferring struct {
	release chan struct{}
	started chan struct{} // a Decide began
	decide  func() Verdict
}

func newDeferring(decide func() Verdict) *deferring {
	return &deferring{release: make(chan struct{}), started: make(chan struct{}, 10), decide: decide}
}

func (d *deferring) Request(_ *Caller, h *h1.Head) Verdict {
	if !strings.HasPrefix(string(h.Target), "/slow") {
		return Verdict{}
	}
	target := string(h.Target) // read on Decide's goroutine too: the head stays
	return Verdict{Decide: func() Verdict {
		d.started <- struct{}{}
		<-d.release
		if string(h.Target) != target {
			panic("the head changed while Decide ran: " + string(h.Target))
		}
		return d.decide()
	}}
}

// TestDecide: a request whose Verdict says Decide waits for it, while
// the loop serves other connections; then it goes on with Decide's
// Verdict (forwarded with its body, answered, handed off) and with what
// its caller sent after it, pipelined or not; a caller gone meanwhile,
// or the loop closed, is told to Decide's Exchange.
func TestDecide(t *testing.T) {
	up := upstream(t, &echo{}).Listener.Addr().String()
	for _, tlsCallers := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "tls"}[tlsCallers]+"/forwarded", func(t *testing.T) {
			ex := newExchange()
			d := newDeferring(func() Verdict { return Verdict{Exchange: ex} })
			f := start(t, Config{Handler: d}, up, tlsCallers)
			a := f.dial()
			io.WriteString(a, "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"+
				"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
			<-d.started
			// Another caller is served while the first one's Decide runs.
			if status, body := f.caller().get("/other"); status != 200 || body != "GET /other " {
				t.Fatalf("another caller got %d %q while a Decide ran", status, body)
			}
			close(d.release)
			br := bufio.NewReader(a)
			if _, body := readResponse(t, br, "POST"); body != "POST /slow hello" {
				t.Errorf("decided request: %q, want its body forwarded", body)
			}
			if _, body := readResponse(t, br, "GET"); body != "GET /after " {
				t.Errorf("pipelined request after it: %q", body)
			}
			if got := ex.await(t); got.status != 200 || got.err != nil {
				t.Errorf("Done(%d, %v), want 200 and no error", got.status, got.err)
			}
		})
	}

	t.Run("answered", func(t *testing.T) {
		d := newDeferring(func() Verdict {
			return Verdict{Answer: []byte("HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\n\r\ndenied")}
		})
		f := start(t, Config{Handler: d}, up, false)
		c := f.caller()
		io.WriteString(c.c, "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody")
		close(d.release)
		if resp, body := readResponse(t, c.br, "POST"); resp.StatusCode != 403 || body != "denied" {
			t.Errorf("got %d %q, want Decide's answer", resp.StatusCode, body)
		}
		// The refused body was read and dropped: the next request is whole.
		if status, body := c.get("/next"); status != 200 || body != "GET /next " {
			t.Errorf("next request: %d %q", status, body)
		}
	})

	t.Run("handed off", func(t *testing.T) {
		handed := make(chan string, 1)
		d := newDeferring(func() Verdict { return Verdict{Handoff: true} })
		f := start(t, Config{Handler: d, Handoff: func(c net.Conn, _ any) {
			defer c.Close()
			req, err := http.ReadRequest(bufio.NewReader(c))
			if err != nil {
				handed <- err.Error()
				return
			}
			b, _ := io.ReadAll(req.Body)
			handed <- req.Method + " " + req.URL.Path + " " + string(b)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhanded")
		}}, up, false)
		c := f.caller()
		io.WriteString(c.c, "PUT /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
		close(d.release)
		if got := <-handed; got != "PUT /slow abc" {
			t.Errorf("Handoff read %q, want the request from its head", got)
		}
		if _, body := readResponse(t, c.br, "PUT"); body != "handed" {
			t.Errorf("got %q, want Handoff's answer", body)
		}
	})

	// The caller hangs up, or the loop closes, while Decide runs: its
	// Verdict's Exchange is told why.
	for _, end := range []struct {
		name string
		end  func(*fixture, *caller)
		want error
	}{
		{"caller gone", func(f *fixture, c *caller) {
			c.c.Close()
			settle(t, "the pair closed", func() bool { return f.l.Conns() == 0 })
		}, ErrHungUp},
		{"loop closed", func(f *fixture, _ *caller) { f.l.Close() }, ErrClosed},
	} {
		t.Run(end.name, func(t *testing.T) {
			ex := newExchange()
			d := newDeferring(func() Verdict { return Verdict{Exchange: ex} })
			f := start(t, Config{Handler: d}, up, false)
			c := f.caller()
			io.WriteString(c.c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
			<-d.started
			end.end(f, c)
			close(d.release)
			if got := ex.await(t); got.status != 0 || !errors.Is(got.err, end.want) {
				t.Errorf("Done(%d, %v), want 0 and %v", got.status, got.err, end.want)
			}
		})
	}

	t.Run("panicked", func(t *testing.T) {
		d := newDeferring(func() Verdict { panic("decide") })
		f := start(t, Config{Handler: d}, up, false)
		c := f.caller()
		io.WriteString(c.c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
		close(d.release)
		expectEOF(t, c.br)
		if status, body := f.caller().get("/other"); status != 200 || body != "GET /other " {
			t.Errorf("after a Decide panicked, another caller got %d %q", status, body)
		}
	})

	t.Run("no stale timeout", func(t *testing.T) {
		// The first exchange's Timeout is over before the second one's
		// Decide returns: it must not fire on the second.
		const timeout = 30 * time.Millisecond
		d := newDeferring(func() Verdict { return Verdict{} })
		f := start(t, Config{Handler: handlerFunc(func(c *Caller, h *h1.Head) Verdict {
			if v := d.Request(c, h); v.Decide != nil {
				return v
			}
			return Verdict{Timeout: timeout}
		})}, up, false)
		c := f.caller()
		if status, _ := c.get("/first"); status != 200 {
			t.Fatalf("first: %d", status)
		}
		io.WriteString(c.c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
		<-d.started
		time.Sleep(3 * timeout) // past the first exchange's timeout: nothing to await, the point is that nothing fires
		close(d.release)
		if resp, body := readResponse(t, c.br, "GET"); resp.StatusCode != 200 || body != "GET /slow " {
			t.Errorf("got %d %q, want the upstream's answer", resp.StatusCode, body)
		}
	})
}
