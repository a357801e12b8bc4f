package relay

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	proxyv1 "github.com/sigil-mesh/sigil/api/proxy/v1"
	"github.com/sigil-mesh/sigil/auditstream"
)

// Identities of the writer-check tests: the sidecar that sends, and the
// other workload whose chain a hostile record claims.
const (
	ownID   = "spiffe://example.org/ns/default/sa/api"
	otherID = "spiffe://example.org/ns/default/sa/web"
)

// sealedLine is a decision of writer in its sealed form (what a sidecar
// sends), with its input's request path set to path.
func sealedLine(t testing.TB, writer, path string) string {
	t.Helper()
	line, err := auditstream.NewChain(writer, 0, "").SealJSON(&auditstream.Record{DecisionID: "d1", Path: auditstream.PathDecision,
		Input:  json.RawMessage(`{"request":{"path":"` + path + `"}}`),
		Result: json.RawMessage("true"), Sigil: auditstream.Meta{Type: auditstream.TypeDecision, Mode: auditstream.ModeEnforce, Actor: otherID}})
	if err != nil {
		t.Fatal(err)
	}
	return string(line)
}

// The agent passes a record on only when its writer, as encoding/json
// reads it (the last "sigil" key, keys matched case-insensitively, the
// field's own value and nothing nested elsewhere), is the sidecar's own:
// a record naming another writer is refused however it is spelt, and the
// cheap read of sealed lines sees exactly what the decode sees.
func TestAuditWriterCheckSeesWhatTheDecodeSees(t *testing.T) {
	own, other := sealedLine(t, ownID+"#a1", "/x"), sealedLine(t, otherID+"#b1", "/x")
	w := func(id string) string { return `{"writer":"` + id + `"}` }
	for _, tt := range []struct {
		name, line string
		want       string // in the ack's error; "" when passed on
	}{
		{"own, sealed", own, ""},
		{"another's, sealed", other, "may only send its own"},
		{"own, hand written", `{"sigil":` + w(ownID+"#a1") + `}`, ""},
		{"duplicate sigil, another's last", `{"sigil":` + w(ownID+"#a1") + `,"sigil":` + w(otherID+"#b1") + `}`, "may only send its own"},
		{"duplicate sigil, own last", `{"sigil":` + w(otherID+"#b1") + `,"sigil":` + w(ownID+"#a1") + `}`, ""},
		{"sealed own, then another sigil", strings.TrimSuffix(own, "}") + `,"sigil":` + w(otherID+"#b1") + `}`, "may only send its own"},
		{"sealed another's, a sigil of own before", strings.Replace(other, `,"sigil":{`, `,"sigil":`+w(ownID+"#a1")+`,"sigil":{`, 1), "may only send its own"},
		{"sealed own, a sigil of another's before", strings.Replace(own, `,"sigil":{`, `,"sigil":`+w(otherID+"#b1")+`,"sigil":{`, 1), ""},
		{"duplicate writer in sigil", `{"sigil":{"writer":"` + ownID + `#a1","writer":"` + otherID + `#b1"}}`, "may only send its own"},
		{"mis-cased sigil last", `{"sigil":` + w(ownID+"#a1") + `,"SIGIL":` + w(otherID+"#b1") + `}`, "may only send its own"},
		{"mis-cased writer last", `{"sigil":{"writer":"` + ownID + `#a1","Writer":"` + otherID + `#b1"}}`, "may only send its own"},
		{"sealed own, mis-cased sigil after", strings.TrimSuffix(own, "}") + `,"Sigil":` + w(otherID+"#b1") + `}`, "may only send its own"},
		{"long s folds to s", `{"sigil":` + w(ownID+"#a1") + `,"ſigil":` + w(otherID+"#b1") + `}`, "may only send its own"},
		{"escaped key", `{"sigil":` + w(ownID+"#a1") + `,"\u0073igil":` + w(otherID+"#b1") + `}`, "may only send its own"},
		{"escaped writer", `{"sigil":{"writer":"spiffe:\/\/example.org\/ns\/default\/sa\/web#b1"}}`, "may only send its own"},
		{"own writer inside input", `{"input":{"sigil":` + w(ownID+"#a1") + `},"sigil":` + w(otherID+"#b1") + `}`, "may only send its own"},
		{"sealed another's with own writer in its input", sealedLine(t, otherID+"#b1", `\",\"sigil\":{\"writer\":\"`+ownID+`#a1\"}}`), "may only send its own"},
		{"another's writer inside input", `{"input":{"sigil":` + w(otherID+"#b1") + `},"sigil":` + w(ownID+"#a1") + `}`, ""},
		{"writer only nested deeper", `{"a":{"sigil":` + w(ownID+"#a1") + `}}`, "may only send its own"},
		{"sigil null after", `{"sigil":` + w(otherID+"#b1") + `,"sigil":null}`, "may only send its own"},
		{"sigil merged: later one without writer", `{"sigil":` + w(otherID+"#b1") + `,"sigil":{"seq":2}}`, "may only send its own"},
		{"writer null", `{"sigil":{"writer":"` + otherID + `#b1","writer":null}}`, "may only send its own"},
		{"writer a number", `{"sigil":{"writer":5}}`, "not JSON"},
		{"sigil an array", `{"sigil":[` + w(ownID+"#a1") + `]}`, "not JSON"},
		{"trailing garbage", own + `x`, "not JSON"},
		{"two values", own + own, "not JSON"},
		{"not an object", `[` + own + `]`, "not JSON"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			passed := false
			r := New(nil, nil, slog.New(slog.DiscardHandler), WithAuditExport(func(context.Context, [][]byte) (bool, error) {
				passed = true
				return false, nil
			}))
			ack := r.forwardAudit(context.Background(), &agentv1.Proxy{Id: "p1", SpiffeId: ownID}, &proxyv1.AuditBatch{BatchId: 1, Records: [][]byte{[]byte(tt.line)}})
			if (tt.want == "") != (ack.GetError() == "") || !strings.Contains(ack.GetError(), tt.want) || passed != (tt.want == "") {
				t.Fatalf("%s\nack error %q, passed on %v; want error %q", tt.line, ack.GetError(), passed, tt.want)
			}
		})
	}
}

// FuzzRecordWriter holds recordWriter to encoding/json's decode of the
// writer: the same writer, and an error exactly when the decode fails.
func FuzzRecordWriter(f *testing.F) {
	f.Add([]byte(sealedLine(f, ownID+"#a1", "/x")))
	f.Add([]byte(`{"sigil":{"writer":"a#1"},"Sigil":{"writer":"b#2"}}`))
	f.Add([]byte(`{"input":{"sigil":{"writer":"a#1"}},"sigil":{"writer":"b#2"},"sigil":null}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		got, gotErr := recordWriter(line)
		var w auditWriter
		wantErr := json.Unmarshal(line, &w)
		if (gotErr == nil) != (wantErr == nil) || (wantErr == nil && got != w.Sigil.Writer) {
			t.Fatalf("%q: writer %q (%v), encoding/json %q (%v)", line, got, gotErr, w.Sigil.Writer, wantErr)
		}
	})
}

// BenchmarkAuditWriterCheck is the agent's check of one record of the
// bench's decisions (the size of BenchmarkAuditRecord's): encoding/json
// into auditWriter, as before, and recordWriter.
func BenchmarkAuditWriterCheck(b *testing.B) {
	line := []byte(sealedLine(b, ownID+"#a1", "/x"))
	input := `{"source":{"principal":"spiffe://example.org/ns/bench/sa/bench","namespace":"bench","service_account":"bench"},"destination":{"principal":"spiffe://example.org/ns/bench/sa/bench","service":"api","namespace":"bench","port":18080},"request":{"method":"GET","path":"/echo?size=1024","url_path":"/echo","query":{"size":["1024"]},"host":"api","headers":{"accept":"*/*","host":"api","user-agent":"fortio.org/fortio-1.69.1","x-forwarded-proto":"http","x-request-id":"6f1c2a4e-93b1-4c55-9f0d-2a7e0d5c1b11"},"protocol":"http"},"connection":{"tls_version":"TLSv1.3"}}`
	line = []byte(strings.Replace(string(line), `{"request":{"path":"/x"}}`, input, 1))
	b.Run("decode", func(b *testing.B) {
		b.SetBytes(int64(len(line)))
		b.ReportAllocs()
		for b.Loop() {
			var w auditWriter
			if err := json.Unmarshal(line, &w); err != nil || w.Sigil.Writer == "" {
				b.Fatal(err)
			}
		}
	})
	b.Run("recordWriter", func(b *testing.B) {
		b.SetBytes(int64(len(line)))
		b.ReportAllocs()
		for b.Loop() {
			if w, err := recordWriter(line); err != nil || w == "" {
				b.Fatal(err)
			}
		}
	})
}
