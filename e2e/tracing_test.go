package e2e

import (
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/e2e/harness"
	"github.com/sigil-mesh/sigil/internal/otlptest"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver stands in for an OpenTelemetry collector (none can run
// here): it decodes what the sidecars' real OTLP/HTTP exporters post.
type otlpReceiver struct {
	mu    sync.Mutex
	spans []receivedSpan
	wake  chan struct{}
}

type receivedSpan struct {
	key  string // service.name|span name
	span *tracepb.Span
}

func startOTLPReceiver(t *testing.T) (*otlpReceiver, string) {
	rcv := &otlpReceiver{wake: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req collectortrace.ExportTraceServiceRequest
		if err := otlptest.ReadRequest(r, "/v1/traces", &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rcv.mu.Lock()
		for _, rs := range req.GetResourceSpans() {
			service := ""
			for _, a := range rs.GetResource().GetAttributes() {
				if a.GetKey() == "service.name" {
					service = a.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					rcv.spans = append(rcv.spans, receivedSpan{service + "|" + s.GetName(), s})
				}
			}
		}
		close(rcv.wake)
		rcv.wake = make(chan struct{})
		rcv.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		w.Write(out)
	}))
	t.Cleanup(srv.Close)
	return rcv, srv.URL
}

// waitSpans waits until spans of trace with all these service|name keys
// arrived.
func (r *otlpReceiver) waitSpans(t *testing.T, trace string, keys ...string) map[string]*tracepb.Span {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		r.mu.Lock()
		got, wake := r.trace(trace), r.wake
		r.mu.Unlock()
		missing := 0
		for _, k := range keys {
			if got[k] == nil {
				missing++
			}
		}
		if missing == 0 {
			return got
		}
		select {
		case <-wake:
		case <-deadline:
			t.Fatalf("spans %v of trace %s never arrived (have %v)", keys, trace, got)
		}
	}
}

// trace returns the spans received for one trace ID, by key.
func (r *otlpReceiver) trace(id string) map[string]*tracepb.Span {
	out := map[string]*tracepb.Span{}
	for _, s := range r.spans {
		if hex.EncodeToString(s.span.GetTraceId()) == id {
			out[s.key] = s.span
		}
	}
	return out
}

// startTracedPair starts web and api with sidecars that export spans to a
// stand-in collector and sample no new trace (the caller's flag decides);
// apiArgs go to api's sidecar.
func startTracedPair(t *testing.T, apiArgs ...string) (*otlpReceiver, identities, *harness.ProxyProc, *harness.ProxyProc) {
	t.Helper()
	rcv, collector := startOTLPReceiver(t)
	ids := startIdentities(t)
	_, apiApp := harness.StartApp(t, "api")
	_, webApp := harness.StartApp(t, "web")
	tracingArgs := []string{"--otlp-endpoint", collector, "--trace-sampling", "0"}
	api := harness.StartProxy(t, ids.api, "api", apiApp, ids.policyDir, append(tracingArgs, apiArgs...)...)
	web := harness.StartProxy(t, ids.web, "web", webApp, ids.policyDir, append(tracingArgs, "--upstream", "api="+api.Inbound+"@"+apiSA)...)
	return rcv, ids, web, api
}

// TestTracesJoinAcrossSidecars: a request carrying a W3C traceparent goes
// web → web's sidecar → api's sidecar → api. Both sidecars export a span
// to the collector over OTLP/HTTP, in the caller's trace, the server
// span a child of the client span, and the app receives a traceparent
// naming the server span — so the app's own spans join the same trace.
func TestTracesJoinAcrossSidecars(t *testing.T) {
	t.Parallel()
	rcv, ids, web, _ := startTracedPair(t)

	if _, err := harness.Run(t, "sigil-proxy", "run", "--socket", "/nonexistent", "--service", "x", "--app", "127.0.0.1:1", "--policy", ids.policyDir, "--otlp-endpoint", "collector:4318"); err == nil || !strings.Contains(err.Error(), "--otlp-endpoint") {
		t.Fatalf("a bad --otlp-endpoint was not named: %v", err)
	}

	// Sampling is 0 for new traces: the caller's sampled flag decides.
	const traceID, parentSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	code, body := curl(t, "-x", "http://"+web.Outbound, "-H", "traceparent: 00-"+traceID+"-"+parentSpan+"-01", "http://api/hello")
	if code != 200 {
		t.Fatalf("GET through the mesh: %d %s", code, body)
	}
	var reply appReply
	if err := json.Unmarshal([]byte(body), &reply); err != nil {
		t.Fatal(err)
	}
	spans := rcv.waitSpans(t, traceID, "web|outbound api", "api|inbound api")
	client, server := spans["web|outbound api"], spans["api|inbound api"]
	if hex.EncodeToString(client.GetParentSpanId()) != parentSpan || client.GetKind() != tracepb.Span_SPAN_KIND_CLIENT {
		t.Fatalf("client span: parent %x kind %v", client.GetParentSpanId(), client.GetKind())
	}
	if string(server.GetParentSpanId()) != string(client.GetSpanId()) || server.GetKind() != tracepb.Span_SPAN_KIND_SERVER {
		t.Fatalf("server span: parent %x, want the client span %x; kind %v", server.GetParentSpanId(), client.GetSpanId(), server.GetKind())
	}
	attrs := map[string]string{}
	for _, a := range server.GetAttributes() {
		attrs[a.GetKey()] = a.GetValue().String()
	}
	if !strings.Contains(attrs["http.response.status_code"], "200") || !strings.Contains(attrs["sigil.source.principal"], webSA) {
		t.Fatalf("server span attributes: %v", attrs)
	}
	want := "00-" + traceID + "-" + hex.EncodeToString(server.GetSpanId()) + "-01"
	if got := reply.Headers["Traceparent"]; got != want {
		t.Fatalf("the app got traceparent %q, want %q", got, want)
	}

	// An unsampled caller (and sampling 0) exports nothing: the sampled
	// request after it is exported, the unsampled one never (spans leave
	// in the order they end).
	unsampled, sampled := strings.Repeat("1", 32), strings.Repeat("2", 32)
	for _, tp := range []string{unsampled + "-" + parentSpan + "-00", sampled + "-" + parentSpan + "-01"} {
		if code, body := curl(t, "-x", "http://"+web.Outbound, "-H", "traceparent: 00-"+tp, "http://api/hello"); code != 200 {
			t.Fatalf("GET: %d %s", code, body)
		}
	}
	rcv.waitSpans(t, sampled, "web|outbound api", "api|inbound api")
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if got := rcv.trace(unsampled); len(got) > 0 {
		t.Fatalf("spans of an unsampled trace were exported: %v", got)
	}
}

// TestB3TracesJoinAcrossSidecars: a caller that speaks only B3 (single
// header, then the multi-header form) stays in its trace across both
// sidecars: the callee's app receives B3 in the form the caller sent,
// with the caller's trace ID (64-bit kept 64-bit) naming the server
// span, and a traceparent beside it; both sidecars export their spans in
// that trace, and the callee sidecar's access log records it. A
// malformed b3 is ignored: the request goes through in a trace of its own.
func TestB3TracesJoinAcrossSidecars(t *testing.T) {
	t.Parallel()
	accessLog := filepath.Join(t.TempDir(), "api-access.log")
	rcv, _, web, api := startTracedPair(t, "--access-log", accessLog)

	get := func(headers ...string) appReply {
		t.Helper()
		args := []string{"-x", "http://" + web.Outbound}
		for _, h := range headers {
			args = append(args, "-H", h)
		}
		code, body := curl(t, append(args, "http://api/hello")...)
		if code != 200 {
			t.Fatalf("GET with %v: %d %s", headers, code, body)
		}
		var reply appReply
		if err := json.Unmarshal([]byte(body), &reply); err != nil {
			t.Fatal(err)
		}
		return reply
	}

	// Single header, 64-bit trace ID, sampled by the caller.
	const shortTrace, callerSpan = "a3ce929d0e0e4736", "00f067aa0ba902b7"
	longTrace := "0000000000000000" + shortTrace
	reply := get("b3: " + shortTrace + "-" + callerSpan + "-1")
	spans := rcv.waitSpans(t, longTrace, "web|outbound api", "api|inbound api")
	client, server := spans["web|outbound api"], spans["api|inbound api"]
	if hex.EncodeToString(client.GetParentSpanId()) != callerSpan || string(server.GetParentSpanId()) != string(client.GetSpanId()) {
		t.Fatalf("spans: client's parent %x (want %s), server's parent %x (want %x)", client.GetParentSpanId(), callerSpan, server.GetParentSpanId(), client.GetSpanId())
	}
	serverSpan, clientSpan := hex.EncodeToString(server.GetSpanId()), hex.EncodeToString(client.GetSpanId())
	if got, want := reply.Headers["B3"], shortTrace+"-"+serverSpan+"-1-"+clientSpan; got != want {
		t.Fatalf("the app got b3 %q, want %q", got, want)
	}
	if got, want := reply.Headers["Traceparent"], "00-"+longTrace+"-"+serverSpan+"-01"; got != want {
		t.Fatalf("the app got traceparent %q, want %q", got, want)
	}

	// Multi-header, 128-bit, sampled: the app gets the X-B3-* form back.
	const multiTrace = "80f198ee56343ba864fe8b2a57d3eff7"
	reply = get("X-B3-TraceId: "+multiTrace, "X-B3-SpanId: "+callerSpan, "X-B3-Sampled: 1")
	spans = rcv.waitSpans(t, multiTrace, "web|outbound api", "api|inbound api")
	serverSpan = hex.EncodeToString(spans["api|inbound api"].GetSpanId())
	if reply.Headers["X-B3-Traceid"] != multiTrace || reply.Headers["X-B3-Spanid"] != serverSpan || reply.Headers["X-B3-Sampled"] != "1" || reply.Headers["B3"] != "" {
		t.Fatalf("the app got B3 headers %v, want trace %s span %s sampled 1 in the multi form", reply.Headers, multiTrace, serverSpan)
	}

	// Malformed (upper-case hex): ignored, never a failure; the request is
	// in a new trace, not the caller's.
	bad := strings.ToUpper(multiTrace)
	reply = get("b3: " + bad + "-" + callerSpan + "-1")
	if strings.Contains(strings.ToLower(reply.Headers["Traceparent"]), multiTrace) || reply.Headers["Traceparent"] == "" {
		t.Fatalf("a malformed b3 was taken: traceparent %q", reply.Headers["Traceparent"])
	}

	api.Stop() // flushes the access log
	access, err := os.ReadFile(accessLog)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(access), `"traceparent":"00-`+longTrace+`-`) || !strings.Contains(string(access), `"traceparent":"00-`+multiTrace+`-`) {
		t.Fatalf("the access log lacks the B3 callers' traces:\n%s", access)
	}
}
