package hop

import (
	"io"
	"net"
	"net/http"
	"strings"
	"sync"

	"github.com/sigil-mesh/sigil/protocol"
)

// copyBufs recycles response copy buffers: a fresh 32 KiB per request was
// the sidecar's largest allocation.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// CopyResponse writes the upstream response and then its trailers. A
// streaming response (no Content-Length, as gRPC's, or server-sent events)
// is flushed after every read; any other goes out in as few writes as the
// server likes (flushing a small answer twice cost a visible share of the
// sidecar's CPU: bench/README.md).
func CopyResponse(w http.ResponseWriter, resp *http.Response) {
	streaming := resp.ContentLength < 0 || strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	RemoveHeaders(h)
	for k := range resp.Trailer {
		h.Add("Trailer", k)
	}
	w.WriteHeader(resp.StatusCode)
	var rc *http.ResponseController
	if streaming {
		rc = http.NewResponseController(w)
		rc.Flush()
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var err error
	for {
		var n int
		n, err = resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if streaming {
				rc.Flush()
			}
		}
		if err != nil {
			if err != io.EOF {
				// A body cut short or malformed upstream must not end as
				// if complete downstream: abort the response (h1 and
				// net/http close the connection or reset the stream).
				panic(http.ErrAbortHandler)
			}
			break
		}
	}
	for k, v := range resp.Trailer {
		h[http.TrailerPrefix+k] = v
	}
	if err != io.EOF && resp.Request != nil && ProtocolOf(resp.Request) == protocol.GRPC && resp.Trailer.Get("Grpc-Status") == "" {
		// The upstream stream broke before its status: the caller gets
		// one all the same, DEADLINE_EXCEEDED if its deadline is why.
		h[http.TrailerPrefix+"Grpc-Status"] = []string{GRPCFailureStatus(resp.Request, http.StatusBadGateway)}
		h[http.TrailerPrefix+"Grpc-Message"] = []string{"sigil: upstream stream ended without a status"}
	}
}

// Pipe copies both ways until both directions end, passing half-closes
// on, and returns the bytes copied from b to a and from a to b (a is the
// caller's side: the response's bytes and the request's).
func Pipe(a, b net.Conn) (toA, toB int64) {
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src net.Conn, n *int64) {
		defer wg.Done()
		*n, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
	}
	go cp(a, b, &toA)
	go cp(b, a, &toB)
	wg.Wait()
	return toA, toB
}
