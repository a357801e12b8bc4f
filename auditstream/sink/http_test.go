package sink

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/auditstream"
)

// eventV1 is the shape of OPA's decision-log event (its
// plugins/logs.EventV1), as an existing receiver decodes it.
type eventV1 struct {
	Labels      map[string]string          `json:"labels"`
	DecisionID  string                     `json:"decision_id"`
	Revision    string                     `json:"revision,omitempty"`
	Bundles     map[string]json.RawMessage `json:"bundles,omitempty"`
	Path        string                     `json:"path,omitempty"`
	Input       *any                       `json:"input,omitempty"`
	Result      *any                       `json:"result,omitempty"`
	Erased      []string                   `json:"erased,omitempty"`
	Timestamp   time.Time                  `json:"timestamp"`
	RequestedBy string                     `json:"requested_by,omitempty"`
}

// opaReceiver is an OPA decision-log receiver: it checks the upload's
// headers, gunzips and decodes the array, and fails the first fail POSTs.
type opaReceiver struct {
	mu     sync.Mutex
	events []eventV1
	posts  int
	sizes  []int
	fail   int
	t      *testing.T
}

func (o *opaReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if r.Method != http.MethodPost || r.Header.Get("Content-Encoding") != "gzip" || r.Header.Get("Content-Type") != "application/json" {
		o.t.Errorf("upload %s with Content-Encoding %q, Content-Type %q", r.Method, r.Header.Get("Content-Encoding"), r.Header.Get("Content-Type"))
	}
	o.posts++
	if o.fail > 0 {
		o.fail--
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	o.sizes = append(o.sizes, int(r.ContentLength))
	zr, err := gzip.NewReader(r.Body)
	if err != nil {
		o.t.Errorf("body is not gzip: %v", err)
		return
	}
	var evs []eventV1
	if err := json.NewDecoder(zr).Decode(&evs); err != nil {
		o.t.Errorf("body is not a JSON array of events: %v", err)
		return
	}
	o.events = append(o.events, evs...)
}

func records(n int) []auditstream.Record {
	c := auditstream.NewChain("spiffe://example.org/ns/default/sa/api#1", 0, "")
	out := make([]auditstream.Record, n)
	for i := range out {
		out[i] = auditstream.Record{DecisionID: "d-" + strconv.Itoa(i), Timestamp: time.Unix(1700000000, 0).UTC(), Path: auditstream.PathDecision,
			Input:  json.RawMessage(`{"request":{"path":"/` + strings.Repeat(strconv.Itoa(i), 50) + `"}}`),
			Result: json.RawMessage("true"), Bundles: map[string]auditstream.Bundle{"sigil": {Revision: "abc"}},
			Sigil: auditstream.Meta{Type: auditstream.TypeDecision, Mode: auditstream.ModeEnforce}}
		c.Seal(&out[i])
	}
	return out
}

func TestHTTPSinkSpeaksOPADecisionLogUpload(t *testing.T) {
	tests := []struct {
		name      string
		params    string
		recs      int
		fail      int
		wantPosts int // at least
		wantErr   bool
	}{
		{name: "one post", recs: 10, wantPosts: 1},
		{name: "split by upload size", params: "?upload-size-limit-bytes=1024", recs: 300, wantPosts: 2},
		{name: "non-2xx is an error", recs: 3, fail: 1, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recv := &opaReceiver{t: t, fail: tt.fail}
			srv := httptest.NewServer(recv)
			defer srv.Close()
			s, err := Open(srv.URL + "/logs" + tt.params)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			err = s.Export(context.Background(), records(tt.recs))
			if tt.wantErr {
				if err == nil {
					t.Fatal("a 503 was taken as delivered")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			recv.mu.Lock()
			defer recv.mu.Unlock()
			if recv.posts < tt.wantPosts || len(recv.events) != tt.recs {
				t.Fatalf("%d posts, %d events; want at least %d posts, %d events", recv.posts, len(recv.events), tt.wantPosts, tt.recs)
			}
			for i, e := range recv.events {
				if e.DecisionID != "d-"+strconv.Itoa(i) || e.Path != auditstream.PathDecision || e.Result == nil || (*e.Result) != true || e.Input == nil {
					t.Fatalf("event %d: %+v", i, e)
				}
			}
			if strings.Contains(tt.params, "upload-size-limit-bytes") {
				for _, sz := range recv.sizes {
					if sz > 1024 {
						t.Fatalf("a post of %d bytes, over the limit", sz)
					}
				}
			}
		})
	}
}

func TestHTTPSinkRefusesBadSpecs(t *testing.T) {
	for _, spec := range []string{
		"http://collector/logs?upload-size-limit-bytes=10",
		"http://collector/logs?timeout=-1s",
		"http://collector/logs?colour=red",
		"http://collector/logs?ca=/x.pem",
		"https://collector/logs?ca=/nonexistent.pem",
		"https://collector/logs?cert=/x.pem",
		"http://collector/logs?timeout=1s&timeout=2s",
		"http://sigil:secret@collector.example.org/logs", // a password in the clear
		"http:///logs",
	} {
		if _, err := Open(spec); err == nil {
			t.Errorf("%s: accepted", spec)
		}
	}
}

// TestSinkSpecParametersOneConvention: every exporter's parameters are
// hyphenated (max-size, app-name, server-name...), the HTTP exporter's
// too; OPA's underscored names (upload_size_limit_bytes) and the old
// ca_file are refused by name rather than silently ignored.
func TestSinkSpecParametersOneConvention(t *testing.T) {
	dir := t.TempDir()
	ca := writeTestCA(t, dir)
	for _, tt := range []struct {
		spec string
		ok   bool
	}{
		{"http://collector/logs?upload-size-limit-bytes=4096&timeout=5s", true},
		{"https://collector/logs?ca=" + ca + "&server-name=collector", true},
		{"http://collector/logs?upload_size_limit_bytes=4096", false},
		{"https://collector/logs?ca_file=" + ca, false},
		{"syslog+tls://logs:6514?ca=" + ca, true},
		{"http://sigil:secret@127.0.0.1:9000/logs", true},
		{"https://sigil:secret@collector/logs", true},
		{"otlp+https://collector:4318?ca=" + ca, true},
	} {
		s, err := Open(tt.spec)
		if (err == nil) != tt.ok {
			t.Errorf("%s: err %v, want ok=%v", tt.spec, err, tt.ok)
		}
		if err == nil {
			s.Close()
		} else if !tt.ok && !strings.Contains(err.Error(), "unknown parameter") {
			t.Errorf("%s: error %q does not name the unknown parameter", tt.spec, err)
		}
	}
}

// writeTestCA writes a self-signed CA certificate (PEM) into dir and
// returns its path.
func writeTestCA(t *testing.T, dir string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestHTTPSinkLinesAreTheRecordsArray: the body the HTTP sink builds from
// spooled lines (the runner passes lines, no decode) is the body it
// builds from the records they encode.
func TestHTTPSinkLinesAreTheRecordsArray(t *testing.T) {
	c := auditstream.NewChain("spiffe://example.org/ns/api/sa/api#1", 0, "")
	var recs []auditstream.Record
	var lines [][]byte
	for _, p := range []string{"/a?x=1&y=<2>", "/b"} {
		in, _ := json.Marshal(map[string]any{"request": map[string]any{"path": p}})
		r := auditstream.Record{DecisionID: auditstream.NewID(), Path: auditstream.PathDecision, Input: in,
			Result: json.RawMessage("true"), Sigil: auditstream.Meta{Type: auditstream.TypeDecision}}
		line, err := c.SealJSON(&r)
		if err != nil {
			t.Fatal(err)
		}
		recs, lines = append(recs, r), append(lines, line)
	}
	fromRecs, err := gzipJSON(recs)
	if err != nil {
		t.Fatal(err)
	}
	fromLines, err := gzipLines(lines)
	if err != nil {
		t.Fatal(err)
	}
	unzip := func(b []byte) string {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		out, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	if a, b := unzip(fromLines), unzip(fromRecs); a != b {
		t.Fatalf("body from lines\n%s\nfrom records\n%s", a, b)
	}
	var s Sink = &httpSink{}
	if _, ok := s.(interface {
		ExportLines(context.Context, [][]byte) error
	}); !ok {
		t.Fatal("the HTTP sink takes no lines: every record is decoded and encoded again")
	}
}
