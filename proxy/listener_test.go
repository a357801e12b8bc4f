package proxy

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/sigil-mesh/sigil/telemetry"
)

func TestDefaultConnLimitsLeaveFDHeadroom(t *testing.T) {
	for _, fds := range []uint64{256, 1024, 65536, 1 << 20, 1 << 62} {
		l := defaultConnLimits(fds)
		if l.inbound < 8 || l.outbound < 8 || l.handshakes < 4 || l.handshakes > l.inbound {
			t.Errorf("fds %d: limits %+v", fds, l)
		}
		// Each connection may take two descriptors.
		if fds < 1<<30 && uint64(2*(l.inbound+l.outbound))+fdReserve > fds {
			t.Errorf("fds %d: limits %+v reach the fd limit", fds, l)
		}
	}
}

// failing fails every Accept with err.
type failing struct {
	net.Listener
	err error
}

func (f failing) Accept() (net.Conn, error) { return nil, f.err }
func (f failing) Close() error              { return nil }

// A listener that stops for good makes /ready fail, naming it and why.
func TestStoppedListenerMakesProxyUnready(t *testing.T) {
	for _, tc := range []struct {
		name  string
		err   error
		drain bool
		ready bool
	}{
		{name: "permanent error", err: &net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.EINVAL)}},
		{name: "closed while serving", err: net.ErrClosed},
		{name: "closed by the drain", err: net.ErrClosed, drain: true, ready: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &Proxy{log: slog.New(slog.NewTextHandler(io.Discard, nil)), metrics: newMetrics(func() float64 { return 0 }, telemetry.NewRecorder(time.Now()))}
			p.refused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x"}, []string{"listener", "reason"})
			p.drain.Store(tc.drain)
			ln := newLimitedListener(failing{err: tc.err}, "inbound", 10, p.metrics.reg, p.refused, p.log)
			p.serveListener("inbound", func() error { _, err := ln.Accept(); return err })
			got := strings.Join(p.notReady.list(), "; ")
			if tc.ready != (got == "") {
				t.Fatalf("not-ready reasons %q", got)
			}
			if tc.ready {
				return
			}
			if !strings.HasPrefix(got, "inbound_listener: stopped: ") {
				t.Errorf("reason %q does not name the listener", got)
			}
			rec := httptest.NewRecorder()
			p.adminHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/ready", nil))
			if rec.Code != 503 || !strings.Contains(rec.Body.String(), "inbound_listener") {
				t.Errorf("/ready: %d %s", rec.Code, rec.Body)
			}
		})
	}
}

// The cap refuses connections beyond max at once and counts them; a
// closed connection gives its slot back once, however often it is closed.
func TestConnectionCapRefusesExcess(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	reg := prometheus.NewRegistry()
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x"}, []string{"listener", "reason"})
	l := newLimitedListener(ln, "outbound", 2, reg, refused, slog.New(slog.NewTextHandler(io.Discard, nil)))
	var clients []net.Conn
	for range 4 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	a, _ := l.Accept()
	b, _ := l.Accept()
	defer b.Close()
	// The third and fourth are refused while two are open (the client
	// sees its connection end at once); a fifth is accepted once a slot
	// frees.
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	for _, cl := range clients[2:] {
		cl.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := cl.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("refused client read: %v, want reset or EOF", err)
		}
	}
	a.Close()
	a.Close()
	c5, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c5.Close()
	c := <-accepted
	defer c.Close()
	if n := l.open.Load(); n != 2 {
		t.Errorf("open %d, want 2", n)
	}
	if got := counterValue(t, refused.WithLabelValues("outbound", refusedMaxConnections)); got != 2 {
		t.Errorf("refused counted %v, want 2", got)
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func TestValidateListenerFlags(t *testing.T) {
	_, err := Config{InboundMaxConnections: -1, OutboundMaxConnections: -2, InboundMaxHandshakes: -3, MinRequestBodyRate: 10, MinRequestBodyGrace: time.Millisecond,
		HTTP2MaxResets: -1, HTTP2MaxControlFrames: -1, AppUID: -2, AppGID: -1, IdleTimeout: time.Minute}.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	for _, flag := range []string{"--inbound-max-connections -1", "--outbound-max-connections -2", "--inbound-max-handshakes -3", "--min-request-body-grace 1ms",
		"--http2-max-resets -1", "--http2-max-control-frames -1", "--app-uid -2"} {
		if !strings.Contains(err.Error(), flag) {
			t.Errorf("error does not name %s:\n%v", flag, err)
		}
	}
}
