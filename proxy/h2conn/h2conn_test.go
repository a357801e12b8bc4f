package h2conn

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// echo answers with the method, the request body's length and digest of
// its trailers, and sets the response header and trailers the request
// asks for through its query.
func echo(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Has("trailer") {
		w.Header().Set("Trailer", "Grpc-Status")
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("X-Method", r.Method)
	w.Header().Set("X-Body-Len", fmt.Sprint(len(body)))
	w.Header().Set("X-Req-Trailer", r.Trailer.Get("X-Sum"))
	if s := q.Get("status"); s != "" {
		var code int
		fmt.Sscan(s, &code)
		w.WriteHeader(code)
	}
	if n := q.Get("size"); n != "" {
		var size int
		fmt.Sscan(n, &size)
		w.Write(bytes.Repeat([]byte("x"), size))
	} else {
		w.Write(body)
	}
	if q.Has("trailer") {
		w.Header().Set("Grpc-Status", "0")
		w.Header().Set(http.TrailerPrefix+"Grpc-Message", "fine")
	}
}

// TestRoundTripSemantics sends requests of each shape through a Client
// and a Server on one connection and checks what arrives either way.
func TestRoundTripSemantics(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(echo)}, nil)
	cl := client(t, addr, nil, Limits{})
	big := strings.Repeat("b", 3<<20) // over the stream and connection windows
	cases := []struct {
		name, method, path, body string
		reqTrailer               string
		status                   int
		respLen                  int
		respTrailer              string
		wantLength               int64
	}{
		{name: "get", method: "GET", path: "/", status: 200, wantLength: 0},
		{name: "post body", method: "POST", path: "/", body: "hello", status: 200, respLen: 5, wantLength: 5},
		{name: "large body both ways", method: "PUT", path: "/", body: big, status: 200, respLen: len(big), wantLength: -1},
		{name: "large response", method: "GET", path: "/?size=1048577", status: 200, respLen: 1048577, wantLength: -1},
		{name: "response trailers", method: "GET", path: "/?trailer=1&size=10", status: 200, respLen: 10, respTrailer: "0/fine", wantLength: -1},
		{name: "request trailers", method: "POST", path: "/", body: "abc", reqTrailer: "42", status: 200, respLen: 3, wantLength: 3},
		{name: "no content", method: "GET", path: "/?status=204", status: 204, wantLength: 0},
		{name: "head", method: "HEAD", path: "/?size=10", status: 200, wantLength: -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := newReq(t, tc.method, tc.path, tc.body)
			if tc.reqTrailer != "" {
				req.Trailer = http.Header{"X-Sum": nil}
				req.ContentLength = -1
				req.Body = io.NopCloser(&trailerSetter{r: strings.NewReader(tc.body), set: func() { req.Trailer.Set("X-Sum", tc.reqTrailer) }})
			}
			resp, err := cl.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status || len(got) != tc.respLen {
				t.Fatalf("status %d, %d body bytes; want %d, %d", resp.StatusCode, len(got), tc.status, tc.respLen)
			}
			if tc.body != "" && tc.respLen == len(tc.body) && string(got) != tc.body {
				t.Fatal("body changed on the way")
			}
			if tc.status == 200 && resp.Header.Get("X-Method") != tc.method {
				t.Fatalf("X-Method %q", resp.Header.Get("X-Method"))
			}
			if resp.ContentLength != tc.wantLength {
				t.Fatalf("ContentLength %d, want %d", resp.ContentLength, tc.wantLength)
			}
			if tr := resp.Trailer.Get("Grpc-Status") + "/" + resp.Trailer.Get("Grpc-Message"); tc.respTrailer != "" && tr != tc.respTrailer {
				t.Fatalf("trailers %q, want %q", tr, tc.respTrailer)
			}
			if tc.reqTrailer != "" && resp.Header.Get("X-Req-Trailer") != tc.reqTrailer {
				t.Fatalf("request trailer arrived as %q", resp.Header.Get("X-Req-Trailer"))
			}
		})
	}
	if n := len(cl.conns); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
	// Every body was read: nothing counts as buffered (a stream that left
	// the connection before its reader was done counts once, not twice).
	cc := cl.conns[0]
	cc.mu.Lock()
	buffered := cc.buffered
	cc.mu.Unlock()
	if buffered != 0 {
		t.Fatalf("%d bytes counted as buffered after every body was read", buffered)
	}
}

// trailerSetter sets the request's trailers when its body ends, as a
// streaming client does.
type trailerSetter struct {
	r   io.Reader
	set func()
}

func (t *trailerSetter) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err == io.EOF {
		t.set()
	}
	return n, err
}

// TestInteropWithGoHTTP2 runs Go's own HTTP/2 against each side over TLS
// 1.3: net/http's client against Server, Client against net/http's
// server.
func TestInteropWithGoHTTP2(t *testing.T) {
	srvTLS, cliTLS := tlsPair(t)
	check := func(t *testing.T, rt http.RoundTripper, url string) {
		t.Helper()
		for _, path := range []string{"/?trailer=1&size=70000", "/"} {
			req, _ := http.NewRequest("POST", url+path, strings.NewReader("ping"))
			resp, err := rt.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.ProtoMajor != 2 {
				t.Fatalf("proto %d, err %v", resp.ProtoMajor, err)
			}
			if strings.Contains(path, "size") && (len(body) != 70000 || resp.Trailer.Get("Grpc-Status") != "0" || resp.Trailer.Get("Grpc-Message") != "fine") {
				t.Fatalf("%d bytes, trailers %v", len(body), resp.Trailer)
			}
			if !strings.Contains(path, "size") && string(body) != "ping" {
				t.Fatalf("body %q", body)
			}
		}
	}
	t.Run("go client, h2conn server", func(t *testing.T) {
		addr := serve(t, &Server{Handler: http.HandlerFunc(echo)}, srvTLS)
		tr := &http.Transport{TLSClientConfig: cliTLS, ForceAttemptHTTP2: true}
		defer tr.CloseIdleConnections()
		check(t, tr, "https://"+addr)
	})
	t.Run("h2conn client, go server", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(echo), TLSConfig: srvTLS}
		go srv.ServeTLS(ln, "", "")
		defer srv.Close()
		check(t, client(t, ln.Addr().String(), cliTLS, Limits{}), "https://"+ln.Addr().String())
	})
}

// TestSlowStreamDoesNotStallOthers: a response nobody reads fills its
// stream's window only; 100 other streams on the same connection finish.
func TestSlowStreamDoesNotStallOthers(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(echo)}, nil)
	cl := client(t, addr, nil, Limits{StreamWindow: 64 << 10})
	stalled, err := cl.RoundTrip(newReq(t, "GET", "/?size=8388608", ""))
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Body.Close()
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range 100 {
		wg.Go(func() {
			resp, err := cl.RoundTrip(newReq(t, "GET", "/?size=65536", ""))
			if err != nil {
				failed.Add(1)
				return
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if n != 65536 {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d of 100 streams failed", failed.Load())
	}
	if n := len(cl.conns); n != 1 {
		t.Fatalf("%d connections, want the one", n)
	}
	// The stalled stream still reads to its end.
	if n, err := io.Copy(io.Discard, stalled.Body); n != 8<<20 || err != nil {
		t.Fatalf("stalled stream: %d bytes, %v", n, err)
	}
}

// TestMaxStreamsOpensAnotherConnection: streams over the server's
// SETTINGS_MAX_CONCURRENT_STREAMS go to a second connection.
func TestMaxStreamsOpensAnotherConnection(t *testing.T) {
	release := make(chan struct{})
	var started sync.WaitGroup
	started.Add(5)
	srv := &Server{Limits: Limits{MaxStreams: 2}, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/warm" {
			return
		}
		started.Done()
		<-release
	})}
	cl := client(t, serve(t, srv, nil), nil, Limits{})
	resp, err := cl.RoundTrip(newReq(t, "GET", "/warm", ""))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() {
			resp, err := cl.RoundTrip(newReq(t, "GET", "/", ""))
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
		})
	}
	started.Wait()
	close(release)
	wg.Wait()
	if n := len(cl.conns); n != 3 {
		t.Fatalf("%d connections for 5 streams of at most 2 each, want 3", n)
	}
}

// TestCancelResetsStream: a request whose context ends resets its stream,
// which cancels the handler's context; the connection carries on.
func TestCancelResetsStream(t *testing.T) {
	handlerGone := make(chan error, 1)
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			handlerGone <- r.Context().Err()
			return
		}
		io.WriteString(w, "ok")
	})}
	cl := client(t, serve(t, srv, nil), nil, Limits{})
	ctx, cancel := context.WithCancel(context.Background())
	resp, err := cl.RoundTrip(newReq(t, "GET", "/block", "").WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := io.ReadAll(resp.Body); !errors.Is(err, context.Canceled) {
		t.Fatalf("body read after cancel: %v", err)
	}
	if err := <-handlerGone; !errors.Is(err, context.Canceled) {
		t.Fatalf("handler context: %v", err)
	}
	resp, err = cl.RoundTrip(newReq(t, "GET", "/", ""))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

// TestShutdownDrains: Shutdown sends GOAWAY, lets the stream in flight
// finish, and returns once the connection closed.
func TestShutdownDrains(t *testing.T) {
	inHandler := make(chan struct{})
	release := make(chan struct{})
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(inHandler)
		<-release
		io.WriteString(w, "done")
	})}
	cl := client(t, serve(t, srv, nil), nil, Limits{})
	got := make(chan string, 1)
	go func() {
		resp, err := cl.RoundTrip(newReq(t, "GET", "/", ""))
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(b)
	}()
	<-inHandler
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	// The GOAWAY reaches the client, which opens no new stream there.
	for deadline := time.Now().Add(5 * time.Second); ; {
		cl.mu.Lock()
		cc := cl.conns[0]
		cl.mu.Unlock()
		cc.mu.Lock()
		away := cc.goingAway
		cc.mu.Unlock()
		if away {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no GOAWAY")
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	if s := <-got; s != "done" {
		t.Fatalf("request in flight: %q", s)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
}

// TestExpectContinue: a body waits for the server's 100 Continue, which
// the server sends when the handler reads the body.
func TestExpectContinue(t *testing.T) {
	cl := client(t, serve(t, &Server{Handler: http.HandlerFunc(echo)}, nil), nil, Limits{})
	req := newReq(t, "POST", "/", "payload")
	req.Header.Set("Expect", "100-continue")
	start := time.Now()
	resp, err := cl.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "payload" {
		t.Fatalf("body %q", b)
	}
	if d := time.Since(start); d >= continueTimeout {
		t.Fatalf("took %v: the 100 never came", d)
	}
}

var _ = tls.VersionTLS13

// TestFullDuplexStream: request and response bodies stream at once, as a
// bidirectional gRPC call's do: each chunk sent comes back before the
// next is sent.
func TestFullDuplexStream(t *testing.T) {
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush() // the head goes before any body arrives
		buf := make([]byte, 64)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				w.Write(buf[:n])
				w.(http.Flusher).Flush()
			}
			if err != nil {
				return
			}
		}
	})}
	cl := client(t, serve(t, srv, nil), nil, Limits{})
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", "https://peer/", pr)
	resp, err := cl.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 64)
	for i := range 20 {
		msg := fmt.Sprintf("message %d", i)
		if _, err := pw.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		n, err := io.ReadAtLeast(resp.Body, buf, len(msg))
		if err != nil || string(buf[:n]) != msg {
			t.Fatalf("echo %q, %v; want %q", buf[:n], err, msg)
		}
	}
	pw.Close()
	if rest, err := io.ReadAll(resp.Body); len(rest) != 0 || err != nil {
		t.Fatalf("after the request's end: %q, %v", rest, err)
	}
}
