package sink

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sigil-mesh/sigil/auditstream"
)

// HTTP sink defaults.
const (
	// DefaultUploadSizeLimitBytes is OPA's decision-log default
	// (upload_size_limit_bytes): the gzip'd size one POST aims to stay
	// under.
	DefaultUploadSizeLimitBytes = 32768
	// DefaultHTTPTimeout bounds one POST.
	DefaultHTTPTimeout = 10 * time.Second
)

func init() {
	register("http", openHTTP)
	register("https", openHTTP)
}

// httpSink posts batches to a receiver of OPA's decision-log upload API:
// POST of a gzip'd JSON array of events, Content-Encoding: gzip,
// Content-Type: application/json; any 2xx is success, anything else an
// error (the runner sends the batch again).
//
// Spec: http[s]://[user:password@]host[:port]/path[?params], the URL
// posted to (OPA's service URL plus its "/logs" path). Parameters,
// hyphenated like every exporter's, removed before the URL is used:
//   - upload-size-limit-bytes: the gzip'd bytes one POST aims at (OPA's
//     upload_size_limit_bytes; DefaultUploadSizeLimitBytes); a batch
//     above it is split, a single larger record goes alone.
//   - timeout: a Go duration bounding one POST (DefaultHTTPTimeout).
//   - https only: ca, cert, key, server-name, as for syslog+tls
//     (tlsFromSpec).
//
// User info in the URL is sent as HTTP basic authentication: over https,
// or over http to a loopback receiver only.
type httpSink struct {
	url    string
	user   *url.Userinfo
	limit  int
	client *http.Client
}

func openHTTP(u *url.URL) (Sink, error) {
	secure := strings.EqualFold(u.Scheme, "https")
	known := []string{"upload-size-limit-bytes", "timeout"}
	if secure {
		known = append(known, "ca", "cert", "key", "server-name")
	}
	q, err := parseSpecQuery(u, known...)
	if err != nil {
		return nil, err
	}
	s := &httpSink{user: u.User}
	if s.limit, err = q.count("upload-size-limit-bytes", DefaultUploadSizeLimitBytes, 1024, 1<<30); err != nil {
		return nil, err
	}
	timeout, err := q.duration("timeout", DefaultHTTPTimeout)
	if err != nil || timeout == 0 {
		return nil, fmt.Errorf("sink: %s: parameter timeout=%q: want a duration above 0 such as 10s", q.kind, q.str("timeout", ""))
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if secure {
		if tc, err = tlsFromSpec(q, u.Hostname()); err != nil {
			return nil, err
		}
	}
	if u.Host == "" {
		return nil, errors.New("sink: http: no host")
	}
	if h := u.Hostname(); !secure && u.User != nil && h != "localhost" && !net.ParseIP(h).IsLoopback() {
		return nil, fmt.Errorf("sink: http: a user and password over plain http to %s would cross the network in the clear: use https (or a loopback receiver)", h)
	}
	target := *u
	target.RawQuery, target.User, target.Fragment = "", nil, ""
	s.url = target.String()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	s.client = &http.Client{Transport: tr, Timeout: timeout}
	return s, nil
}

// Export implements Sink: the records go in POSTs of at most the upload
// size limit (gzip'd), in order. A failure after some POSTs succeeded
// fails the batch, which is then sent again whole (at least once).
func (s *httpSink) Export(ctx context.Context, recs []auditstream.Record) error {
	return s.send(ctx, len(recs), func(i, j int) ([]byte, error) { return gzipJSON(recs[i:j]) })
}

// ExportLines is Export for records as the spool holds them (each line a
// record's JSON, as json.Marshal writes it): the array is joined from the
// lines, sparing the exporter a decode and the sink an encode per record.
func (s *httpSink) ExportLines(ctx context.Context, lines [][]byte) error {
	return s.send(ctx, len(lines), func(i, j int) ([]byte, error) { return gzipLines(lines[i:j]) })
}

// send POSTs records 0 to total, body(i, j) being records i to j as one
// gzip'd JSON array, in as few POSTs under the limit as chunk finds.
func (s *httpSink) send(ctx context.Context, total int, body func(i, j int) ([]byte, error)) error {
	for i := 0; i < total; {
		n, b, err := s.chunk(total-i, func(n int) ([]byte, error) { return body(i, i+n) })
		if err != nil {
			return err
		}
		if err := s.post(ctx, b); err != nil {
			return err
		}
		i += n
	}
	return nil
}

// chunk returns how many of the n records next (at least one) fit in one
// POST and its gzip'd body, halving until the body is under the limit.
func (s *httpSink) chunk(n int, body func(n int) ([]byte, error)) (int, []byte, error) {
	for {
		b, err := body(n)
		if err != nil {
			return 0, nil, err
		}
		if len(b) <= s.limit || n == 1 {
			return n, b, nil
		}
		n /= 2
	}
}

// gzipJSON is recs as a gzip'd JSON array.
func gzipJSON(recs []auditstream.Record) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := json.NewEncoder(zw).Encode(recs); err != nil {
		return nil, fmt.Errorf("sink: http: encoding: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("sink: http: %w", err)
	}
	return buf.Bytes(), nil
}

// gzipLines is the records' JSON lines as a gzip'd JSON array, the bytes
// gzipJSON gives for the records they encode.
func gzipLines(lines [][]byte) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write([]byte{'['}) // a bytes.Buffer's writes do not fail: Close reports
	for i, l := range lines {
		if i > 0 {
			zw.Write([]byte{','})
		}
		zw.Write(l)
	}
	zw.Write([]byte("]\n"))
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("sink: http: %w", err)
	}
	return buf.Bytes(), nil
}

func (s *httpSink) post(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("sink: http: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Encoding", "gzip")
	req.Header.Set("User-Agent", "sigil-audit-export")
	if s.user != nil {
		pw, _ := s.user.Password()
		req.SetBasicAuth(s.user.Username(), pw)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("sink: http: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("sink: http: %s answered %s", s.url, resp.Status)
	}
	return nil
}

// Close implements Sink.
func (s *httpSink) Close() error {
	s.client.CloseIdleConnections()
	return nil
}
