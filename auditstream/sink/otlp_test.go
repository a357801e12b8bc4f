package sink

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	collogpb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logpb "go.opentelemetry.io/proto/otlp/logs/v1"
	"google.golang.org/protobuf/proto"

	"github.com/sigil-mesh/sigil/auditstream"
	"github.com/sigil-mesh/sigil/internal/otlptest"
)

// otlpReceiver is an OTLP/HTTP logs receiver: it decodes each request
// with the official proto types and answers as told.
type otlpReceiver struct {
	mu       sync.Mutex
	reqs     []*collogpb.ExportLogsServiceRequest
	status   int
	rejected int64 // partial success: records rejected
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req collogpb.ExportLogsServiceRequest
	if err := otlptest.ReadRequest(r, "/v1/logs", &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.status != 0 {
		http.Error(w, "receiver says no", o.status)
		return
	}
	o.reqs = append(o.reqs, &req)
	resp := &collogpb.ExportLogsServiceResponse{}
	if o.rejected > 0 {
		resp.PartialSuccess = &collogpb.ExportLogsPartialSuccess{RejectedLogRecords: o.rejected, ErrorMessage: "too old"}
	}
	out, _ := proto.Marshal(resp)
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

func attrs(kvs []*commonpb.KeyValue) map[string]*commonpb.AnyValue {
	m := map[string]*commonpb.AnyValue{}
	for _, kv := range kvs {
		m[kv.Key] = kv.Value
	}
	return m
}

// TestOTLPExportIsSynchronousAndComplete: each record reaches a real
// OTLP/HTTP receiver as one log record (resource service.name, severity,
// the record's JSON as body, its chain fields as attributes), and Export
// fails when the receiver refuses the request or rejects part of it.
func TestOTLPExportIsSynchronousAndComplete(t *testing.T) {
	rcv := &otlpReceiver{}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	s, err := Open("otlp+http://" + strings.TrimPrefix(srv.URL, "http://") + "?service-name=sigil-test")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	recs := sealed(t, "spiffe://td/ns/a/sa/web#1", 3)
	recs[1].Result = json.RawMessage("false")
	recs[2].Path, recs[2].Result, recs[2].Sigil = auditstream.PathEvent(auditstream.TypeGap), nil, auditstream.Meta{Type: auditstream.TypeGap, Lost: 9}
	reseal(t, recs)
	ctx := context.Background()
	if err := s.Export(ctx, recs); err != nil {
		t.Fatal(err)
	}
	rcv.mu.Lock()
	if len(rcv.reqs) != 1 {
		t.Fatalf("%d requests, want 1 per batch", len(rcv.reqs))
	}
	rl := rcv.reqs[0].ResourceLogs
	rcv.mu.Unlock()
	if len(rl) != 1 || attrs(rl[0].Resource.Attributes)["service.name"].GetStringValue() != "sigil-test" {
		t.Fatalf("resource %v, want service.name=sigil-test", rl)
	}
	var got []*logpb.LogRecord
	for _, sl := range rl[0].ScopeLogs {
		if sl.Scope.GetName() != otlpScope {
			t.Errorf("scope %q", sl.Scope.GetName())
		}
		got = append(got, sl.LogRecords...)
	}
	if len(got) != len(recs) {
		t.Fatalf("%d log records, want %d", len(got), len(recs))
	}
	wantSev := []logpb.SeverityNumber{logpb.SeverityNumber_SEVERITY_NUMBER_INFO, logpb.SeverityNumber_SEVERITY_NUMBER_INFO2, logpb.SeverityNumber_SEVERITY_NUMBER_ERROR}
	for i, lr := range got {
		r := recs[i]
		a := attrs(lr.Attributes)
		if a["decision_id"].GetStringValue() != r.DecisionID || a["sigil.writer"].GetStringValue() != r.Sigil.Writer ||
			a["sigil.seq"].GetIntValue() != r.Sigil.Seq || a["sigil.hash"].GetStringValue() != r.Sigil.Hash || a["sigil.type"].GetStringValue() != r.Sigil.Type {
			t.Errorf("record %d: attributes %v", i, a)
		}
		if lr.SeverityNumber != wantSev[i] {
			t.Errorf("record %d: severity %v, want %v", i, lr.SeverityNumber, wantSev[i])
		}
		if lr.TimeUnixNano != uint64(r.Timestamp.UnixNano()) || lr.EventName != r.Sigil.Type {
			t.Errorf("record %d: time %d event %q", i, lr.TimeUnixNano, lr.EventName)
		}
		var back auditstream.Record
		if err := json.Unmarshal([]byte(lr.Body.GetStringValue()), &back); err != nil {
			t.Fatalf("record %d: body is not the record's JSON: %v", i, err)
		}
		if err := auditstream.Check(back); err != nil {
			t.Errorf("record %d: the body fails its hash: %v", i, err)
		}
	}
	if a := attrs(got[2].Attributes); a["sigil.lost"].GetIntValue() != 9 {
		t.Errorf("gap record: sigil.lost %v, want 9", a["sigil.lost"])
	}

	for _, tt := range []struct {
		name     string
		status   int
		rejected int64
		want     string
	}{
		{"receiver unavailable", http.StatusServiceUnavailable, 0, "receiver says no"},
		{"receiver refuses", http.StatusBadRequest, 0, "400"},
		{"partial success", 0, 2, "too old"},
	} {
		rcv.mu.Lock()
		rcv.status, rcv.rejected = tt.status, tt.rejected
		rcv.mu.Unlock()
		err := s.Export(ctx, recs[:1])
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Export returned %v, want an error naming %q", tt.name, err, tt.want)
		}
	}
	srv.Close()
	if err := s.Export(ctx, recs[:1]); err == nil {
		t.Error("receiver down: Export returned nil")
	}
}

func TestOTLPSpecParams(t *testing.T) {
	checkSpecsRefused(t, []specCase{
		{"otlp+http://127.0.0.1:4318?ca=/x", `unknown parameter "ca"`},
		{"otlp+http://127.0.0.1:4318?compression=zstd", "compression"},
		{"otlp+http://127.0.0.1:4318?timeout=0s", "timeout"},
		{"otlp+https://127.0.0.1:4318?key=/x", "cert and key go together"},
		{"otlp+http://user:pw@127.0.0.1:4318", "no user"},
	})
}

// TestOTLPHTTPSVerifiesServerAndSendsEnvHeaders: otlp+https trusts only
// the ca given (an unknown server certificate fails the batch), and the
// request headers come from OTEL_EXPORTER_OTLP_LOGS_HEADERS, not the spec.
func TestOTLPHTTPSVerifiesServerAndSendsEnvHeaders(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "authorization=Bearer%20t0k3n")
	var gotAuth string
	rcv := &otlpReceiver{}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth = r.Header.Get("Authorization")
		rcv.ServeHTTP(w, r)
	}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(srv.URL, "https://")
	ctx := context.Background()
	recs := sealed(t, "w", 1)

	untrusted, err := Open("otlp+https://" + host)
	if err != nil {
		t.Fatal(err)
	}
	defer untrusted.Close()
	if err := untrusted.Export(ctx, recs); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("server certificate from no trusted CA: Export returned %v, want a certificate error", err)
	}

	s, err := Open("otlp+https://" + host + "?ca=" + ca)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Export(ctx, recs); err != nil {
		t.Fatal(err)
	}
	if gotAuth != "Bearer t0k3n" {
		t.Errorf("Authorization %q, want the header from OTEL_EXPORTER_OTLP_LOGS_HEADERS", gotAuth)
	}
}
