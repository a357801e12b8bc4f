package h2conn

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// rawPeer is a hand-driven HTTP/2 server: the first request it sees on any
// of its connections is turned away by first (a GOAWAY or RST_STREAM), and
// every later one is answered 200.
func rawPeer(t *testing.T, first func(fr *http2.Framer, id uint32)) (addr string, seen *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	seen = new(atomic.Int32)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				pre := make([]byte, len(http2.ClientPreface))
				if _, err := io.ReadFull(c, pre); err != nil {
					return
				}
				fr := http2.NewFramer(c, c)
				fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
				fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 100})
				for {
					f, err := fr.ReadFrame()
					if err != nil {
						return
					}
					switch f := f.(type) {
					case *http2.SettingsFrame:
						if !f.IsAck() {
							fr.WriteSettingsAck()
						}
					case *http2.MetaHeadersFrame:
						if seen.Add(1) == 1 {
							first(fr, f.StreamID)
							continue
						}
						var blk strings.Builder
						enc := hpack.NewEncoder(&blk)
						enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
						fr.WriteHeaders(http2.HeadersFrameParam{StreamID: f.StreamID, BlockFragment: []byte(blk.String()), EndHeaders: true, EndStream: true})
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), seen
}

// failingConn is a connection whose writes can be made to fail, as a
// socket whose peer has gone does (EPIPE), or to block until it is
// closed, as one whose peer stopped reading does.
type failingConn struct {
	net.Conn
	broken atomic.Bool
	hold   atomic.Bool
	closed chan struct{}
	once   sync.Once
	writes chan struct{} // a token per write held
}

func (c *failingConn) Write(p []byte) (int, error) {
	if c.hold.Load() {
		select {
		case c.writes <- struct{}{}:
		default:
		}
		<-c.closed
		return 0, net.ErrClosed
	}
	if c.broken.Load() {
		return 0, &net.OpError{Op: "write", Net: "tcp", Err: syscall.EPIPE}
	}
	return c.Conn.Write(p)
}

func (c *failingConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// A request a connection never carried to its peer (refused by
// REFUSED_STREAM, above a GOAWAY's last stream, or on a connection that
// failed or closed before its HEADERS left) is sent again on another
// connection, whatever its method, and the peer sees it once; a request
// the peer may have processed is not. Before the fix a write failing with
// EPIPE ("broken pipe") failed every request queued on the connection
// (the 503 seen in e2e's TestHTTP2RapidResetIsBounded).
func TestUnprocessedRequestsRetried(t *testing.T) {
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		t.Run(method+"/goaway below the stream", func(t *testing.T) {
			addr, seen := rawPeer(t, func(fr *http2.Framer, id uint32) { fr.WriteGoAway(0, http2.ErrCodeNo, nil) })
			cl, retries := retryCounting(client(t, addr, nil, Limits{}))
			roundTripOK(t, cl, method)
			if n := seen.Load(); n != 2 || retries.Load() != 1 {
				t.Fatalf("peer saw %d requests, %d retries; want 2 and 1", n, retries.Load())
			}
		})
		t.Run(method+"/refused stream", func(t *testing.T) {
			addr, seen := rawPeer(t, func(fr *http2.Framer, id uint32) { fr.WriteRSTStream(id, http2.ErrCodeRefusedStream) })
			cl, retries := retryCounting(client(t, addr, nil, Limits{}))
			roundTripOK(t, cl, method)
			if n := seen.Load(); n != 2 || retries.Load() != 1 {
				t.Fatalf("peer saw %d requests, %d retries; want 2 and 1", n, retries.Load())
			}
		})
		for _, how := range []string{"write fails (broken pipe)", "peer closes with writes pending"} {
			t.Run(method+"/"+how, func(t *testing.T) {
				var handled atomic.Int32
				addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					handled.Add(1)
					io.Copy(io.Discard, r.Body)
				})}, nil)
				var first *failingConn
				var dials atomic.Int32
				cl := &Client{Dialer: dialFunc(func(ctx context.Context) (net.Conn, error) {
					c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
					if err != nil || dials.Add(1) > 1 {
						return c, err
					}
					first = &failingConn{Conn: c, closed: make(chan struct{}), writes: make(chan struct{}, 1)}
					return first, nil
				})}
				t.Cleanup(cl.Close)
				cl, retries := retryCounting(cl)
				roundTripOK(t, cl, method) // the connection is up and shared
				const n = 8
				if how == "write fails (broken pipe)" {
					first.broken.Store(true)
				} else {
					first.hold.Store(true)
					go func() {
						<-first.writes
						// The peer goes: the read loop sees the end.
						first.Conn.(*net.TCPConn).CloseRead()
					}()
				}
				var wg sync.WaitGroup
				for range n {
					wg.Add(1)
					go func() { defer wg.Done(); roundTripOK(t, cl, method) }()
				}
				wg.Wait()
				if h := handled.Load(); h != n+1 {
					t.Errorf("handler ran %d times, want %d (each request once)", h, n+1)
				}
				if r := retries.Load(); r < 1 || r > n {
					t.Errorf("%d retries, want 1..%d", r, n)
				}
			})
		}
	}
}

// A request whose HEADERS reached the peer is not sent again when its
// connection is lost: the peer may have processed it.
func TestProcessedRequestNotRetried(t *testing.T) {
	got := make(chan struct{})
	var handled atomic.Int32
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if handled.Add(1) == 1 {
			close(got)
		}
		<-r.Context().Done()
	})}, nil)
	var nc net.Conn
	cl := &Client{Dialer: dialFunc(func(ctx context.Context) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		nc = c
		return c, err
	})}
	t.Cleanup(cl.Close)
	cl, retries := retryCounting(cl)
	go func() { <-got; nc.Close() }()
	_, err := cl.RoundTrip(newReq(t, http.MethodPost, "/", "body"))
	if err == nil || IsUnprocessed(err) {
		t.Fatalf("RoundTrip: %v, want a failure not marked unprocessed", err)
	}
	if handled.Load() != 1 || retries.Load() != 0 {
		t.Fatalf("handler ran %d times with %d retries, want once and none", handled.Load(), retries.Load())
	}
}

func retryCounting(cl *Client) (*Client, *atomic.Int32) {
	n := new(atomic.Int32)
	cl.OnRetry = func(err error) {
		if !IsUnprocessed(err) {
			n.Add(1 << 20) // fails every count check
		}
		n.Add(1)
	}
	return cl, n
}

func roundTripOK(t *testing.T, cl *Client, method string) {
	t.Helper()
	body := ""
	if method == http.MethodPost {
		body = "a body to send again"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cl.RoundTrip(newReq(t, method, "/", body).WithContext(ctx))
	if err != nil {
		t.Error(err)
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("status %d", resp.StatusCode)
	}
}
