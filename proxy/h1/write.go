package h1

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// writeRequest writes req as Request.Write does, except that a missing
// User-Agent stays missing (the proxy passes on what the app sent). The
// common request — a plain path, a plain host, a known length — is
// written here without Request.Write's allocations (a transfer writer,
// a header sorter, formatted lines: 5 per request, and twice the time
// for a GET with three headers: bench/README.md); anything else goes to Request.Write, and
// FuzzWriteRequest checks the bytes are the same. Like Request.Write it
// closes the body.
func writeRequest(bw *bufio.Writer, req *http.Request) error {
	if !fastWritable(req) {
		if _, ok := req.Header["User-Agent"]; !ok {
			// Request.Write would add Go's. The header may be shared
			// (mirrors): change a copy.
			r := *req
			r.Header = req.Header.Clone()
			r.Header["User-Agent"] = []string{""}
			req = &r
		}
		return req.Write(bw)
	}
	if req.Body != nil {
		defer req.Body.Close()
	}
	path := req.URL.Path
	if path == "" {
		path = "/"
	}
	bw.WriteString(req.Method)
	bw.WriteByte(' ')
	bw.WriteString(path)
	if req.URL.RawQuery != "" || req.URL.ForceQuery {
		bw.WriteByte('?')
		bw.WriteString(req.URL.RawQuery)
	}
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(hostOf(req))
	bw.WriteString("\r\n")
	if ua := req.Header["User-Agent"]; len(ua) > 0 && ua[0] != "" {
		writeField(bw, "User-Agent", textproto.TrimString(ua[0]))
	}
	if req.ContentLength > 0 || req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch {
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), req.ContentLength, 10))
		bw.WriteString("\r\n")
	}
	// Sorted, as Request.Write does, in a key array that stays on the
	// stack for up to 32 header names.
	var arr [32]string
	for _, k := range sortedNames(arr[:0], req.Header, "User-Agent", "Trailer") {
		for _, v := range req.Header[k] {
			writeField(bw, k, textproto.TrimString(v))
		}
	}
	if _, err := bw.WriteString("\r\n"); err != nil {
		return err
	}
	if req.ContentLength > 0 {
		return copyBody(bw, req.Body, req.ContentLength)
	}
	return nil
}

// copyBody copies exactly n bytes of a request body, as Request.Write
// does: a shorter or longer body is an error.
func copyBody(w io.Writer, body io.Reader, n int64) error {
	got, err := io.CopyN(w, body, n)
	if err == io.EOF {
		return fmt.Errorf("h1: ContentLength=%d with Body length %d", n, got)
	}
	if err != nil {
		return err
	}
	var one [1]byte
	if m, _ := body.Read(one[:]); m > 0 {
		return errors.New("http: ContentLength=" + strconv.FormatInt(n, 10) + " with a longer Body")
	}
	return nil
}

// fastWritable is a request writeRequest writes itself: the same bytes
// Request.Write would (but for User-Agent), with nothing to escape,
// replace or encode.
func fastWritable(req *http.Request) bool {
	u := req.URL
	if req.Close || req.TransferEncoding != nil || req.Trailer != nil || req.Method == "" || req.Method == http.MethodConnect ||
		u == nil || u.Opaque != "" || u.RawPath != "" || !isToken(req.Method) || !plainPath(u.Path) || !plainQuery(u.RawQuery) {
		return false
	}
	host := hostOf(req)
	if host == "" || !plainHost(host) {
		return false
	}
	switch hasBody := req.Body != nil && req.Body != http.NoBody; {
	case req.ContentLength < 0, req.ContentLength > 0 && !hasBody, req.ContentLength == 0 && hasBody:
		// Unknown lengths are chunked (or probed) by Request.Write.
		return false
	}
	for _, vs := range req.Header {
		for _, v := range vs {
			if strings.ContainsAny(v, "\r\n") {
				// Request.Write turns line breaks into spaces.
				return false
			}
		}
	}
	return true
}

// sortedNames appends to keys the names of h's fields, sorted, as
// Request.Write writes them: those that are tokens, except Host,
// Content-Length, Transfer-Encoding (which the writer frames itself)
// and the names in skip. keys may be a stack array's slice.
func sortedNames(keys []string, h http.Header, skip ...string) []string {
	for k := range h {
		switch {
		case k == "Host", k == "Content-Length", k == "Transfer-Encoding", slices.Contains(skip, k):
		case httpguts.ValidHeaderFieldName(k):
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

func hostOf(req *http.Request) string {
	if req.Host != "" {
		return req.Host
	}
	return req.URL.Host
}

// plainHost: a name or IPv4 address and port, nothing to encode or strip
// (no IPv6 zones, no Unicode).
func plainHost(h string) bool {
	for i := 0; i < len(h); i++ {
		switch c := h[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '.', c == ':', c == '_':
		default:
			return false
		}
	}
	return true
}
