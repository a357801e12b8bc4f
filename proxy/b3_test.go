package proxy

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

const (
	b3Trace128 = "80f198ee56343ba864fe8b2a57d3eff7"
	b3Trace64  = "a3ce929d0e0e4736"
	b3Span     = "e457b5a2e4d86bd1"
	b3Parent   = "05e3ac9a4f6e3b90"
)

// TestB3ExtractStrict: B3 is read in both forms as the specification
// writes it, and anything malformed is ignored as if absent.
func TestB3ExtractStrict(t *testing.T) {
	for _, tc := range []struct {
		name    string
		headers map[string][]string
		form    b3Form
		trace   string // hex of the 128-bit trace ID; "" for no span
		short   bool
		sample  b3Sampling
	}{
		{"single, sampled", map[string][]string{"B3": {b3Trace128 + "-" + b3Span + "-1"}}, b3FormSingle, b3Trace128, false, b3Accept},
		{"single with parent", map[string][]string{"B3": {b3Trace128 + "-" + b3Span + "-0-" + b3Parent}}, b3FormSingle, b3Trace128, false, b3Deny},
		{"single, deferred", map[string][]string{"B3": {b3Trace128 + "-" + b3Span}}, b3FormSingle, b3Trace128, false, b3Deferred},
		{"single, debug", map[string][]string{"B3": {b3Trace128 + "-" + b3Span + "-d"}}, b3FormSingle, b3Trace128, false, b3Debug},
		{"single, 64-bit trace", map[string][]string{"B3": {b3Trace64 + "-" + b3Span + "-1"}}, b3FormSingle, "0000000000000000" + b3Trace64, true, b3Accept},
		{"single, decision alone", map[string][]string{"B3": {"0"}}, b3FormSingle, "", false, b3Deny},
		{"multi", map[string][]string{"X-B3-Traceid": {b3Trace128}, "X-B3-Spanid": {b3Span}, "X-B3-Parentspanid": {b3Parent}, "X-B3-Sampled": {"1"}}, b3FormMulti, b3Trace128, false, b3Accept},
		{"multi, legacy true", map[string][]string{"X-B3-Traceid": {b3Trace64}, "X-B3-Spanid": {b3Span}, "X-B3-Sampled": {"true"}}, b3FormMulti, "0000000000000000" + b3Trace64, true, b3Accept},
		{"multi, debug flag", map[string][]string{"X-B3-Traceid": {b3Trace128}, "X-B3-Spanid": {b3Span}, "X-B3-Flags": {"1"}}, b3FormMulti, b3Trace128, false, b3Debug},
		{"multi, deferred", map[string][]string{"X-B3-Traceid": {b3Trace128}, "X-B3-Spanid": {b3Span}}, b3FormMulti, b3Trace128, false, b3Deferred},
		{"multi, decision alone", map[string][]string{"X-B3-Sampled": {"0"}}, b3FormMulti, "", false, b3Deny},
		{"single wins over multi", map[string][]string{"B3": {b3Trace128 + "-" + b3Span + "-1"}, "X-B3-Traceid": {b3Trace64}, "X-B3-Spanid": {b3Parent}}, b3FormSingle, b3Trace128, false, b3Accept},

		{"none", map[string][]string{"Traceparent": {"00-" + b3Trace128 + "-" + b3Span + "-01"}}, b3None, "", false, b3Deferred},
		{"single, upper case", map[string][]string{"B3": {strings.ToUpper(b3Trace128) + "-" + b3Span + "-1"}}, b3None, "", false, b3Deferred},
		{"single, zero trace", map[string][]string{"B3": {strings.Repeat("0", 32) + "-" + b3Span + "-1"}}, b3None, "", false, b3Deferred},
		{"single, zero span", map[string][]string{"B3": {b3Trace128 + "-" + strings.Repeat("0", 16) + "-1"}}, b3None, "", false, b3Deferred},
		{"single, 20-digit trace", map[string][]string{"B3": {b3Trace128[:20] + "-" + b3Span + "-1"}}, b3None, "", false, b3Deferred},
		{"single, short span", map[string][]string{"B3": {b3Trace128 + "-" + b3Span[:15] + "-1"}}, b3None, "", false, b3Deferred},
		{"single, bad state", map[string][]string{"B3": {b3Trace128 + "-" + b3Span + "-2"}}, b3None, "", false, b3Deferred},
		{"single, empty state", map[string][]string{"B3": {b3Trace128 + "-" + b3Span + "--" + b3Parent}}, b3None, "", false, b3Deferred},
		{"single, bad parent", map[string][]string{"B3": {b3Trace128 + "-" + b3Span + "-1-xyz"}}, b3None, "", false, b3Deferred},
		{"single, five fields", map[string][]string{"B3": {b3Trace128 + "-" + b3Span + "-1-" + b3Parent + "-1"}}, b3None, "", false, b3Deferred},
		{"single, trailing dash", map[string][]string{"B3": {b3Trace128 + "-" + b3Span + "-"}}, b3None, "", false, b3Deferred},
		{"single, bad decision", map[string][]string{"B3": {"x"}}, b3None, "", false, b3Deferred},
		{"single, empty", map[string][]string{"B3": {""}}, b3None, "", false, b3Deferred},
		{"single, twice", map[string][]string{"B3": {b3Trace128 + "-" + b3Span + "-1", b3Trace128 + "-" + b3Parent + "-1"}}, b3None, "", false, b3Deferred},
		{"multi, trace without span", map[string][]string{"X-B3-Traceid": {b3Trace128}}, b3None, "", false, b3Deferred},
		{"multi, span twice", map[string][]string{"X-B3-Traceid": {b3Trace128}, "X-B3-Spanid": {b3Span, b3Parent}}, b3None, "", false, b3Deferred},
		{"multi, bad sampled", map[string][]string{"X-B3-Traceid": {b3Trace128}, "X-B3-Spanid": {b3Span}, "X-B3-Sampled": {"yes"}}, b3None, "", false, b3Deferred},
		{"multi, bad flags", map[string][]string{"X-B3-Traceid": {b3Trace128}, "X-B3-Spanid": {b3Span}, "X-B3-Flags": {"2"}}, b3None, "", false, b3Deferred},
		{"multi, bad parent", map[string][]string{"X-B3-Traceid": {b3Trace128}, "X-B3-Spanid": {b3Span}, "X-B3-Parentspanid": {"0"}}, b3None, "", false, b3Deferred},
		{"multi, empty sampled", map[string][]string{"X-B3-Sampled": {""}}, b3None, "", false, b3Deferred},
		{"multi, empty span", map[string][]string{"X-B3-Traceid": {b3Trace128}, "X-B3-Spanid": {""}, "X-B3-Sampled": {"1"}}, b3None, "", false, b3Deferred},
		{"multi, parent alone", map[string][]string{"X-B3-Parentspanid": {b3Parent}}, b3None, "", false, b3Deferred},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := extractB3(http.Header(tc.headers))
			if c.form != tc.form || c.sampling != tc.sample || c.short != tc.short {
				t.Fatalf("form %v sampling %v short %v, want %v %v %v", c.form, c.sampling, c.short, tc.form, tc.sample, tc.short)
			}
			got := ""
			if c.sc.IsValid() {
				got = c.sc.TraceID().String()
				if !c.sc.IsRemote() || c.sc.IsSampled() != (tc.sample == b3Accept || tc.sample == b3Debug) {
					t.Fatalf("span context %+v: want remote, sampled per %v", c.sc, tc.sample)
				}
			}
			if got != tc.trace {
				t.Fatalf("trace %q, want %q", got, tc.trace)
			}
		})
	}
}

// newTestTracing is a tracing that records spans in memory, sampling new
// traces at ratio.
func newTestTracing(ratio float64) (*tracing, *tracetest.InMemoryExporter) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(newB3Sampler(ratio)))
	return &tracing{tp: tp, tracer: tp.Tracer("test")}, exp
}

// TestB3PropagationKeepsForm: a request that came with B3 leaves with B3
// in the same form and with traceparent, both naming the sidecar's span
// as a child of the caller's; one without B3 gets none added; a valid
// traceparent wins over B3; the sampling decision follows the caller's.
func TestB3PropagationKeepsForm(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ratio    float64
		in       map[string]string
		sampled  bool
		trace    string
		parent   string
		wantOut  func(span trace.SpanContext) map[string]string
		wantGone []string
	}{
		{
			name: "single in, single and traceparent out", in: map[string]string{"B3": b3Trace128 + "-" + b3Span + "-1-" + b3Parent},
			sampled: true, trace: b3Trace128, parent: b3Span,
			wantOut: func(s trace.SpanContext) map[string]string {
				return map[string]string{"B3": b3Trace128 + "-" + s.SpanID().String() + "-1-" + b3Span, "Traceparent": "00-" + b3Trace128 + "-" + s.SpanID().String() + "-01"}
			},
		},
		{
			name: "single wins, stale multi headers go", in: map[string]string{"B3": b3Trace128 + "-" + b3Span + "-1", "X-B3-Traceid": b3Trace64, "X-B3-Spanid": b3Parent, "X-B3-Sampled": "0"},
			sampled: true, trace: b3Trace128, parent: b3Span,
			wantOut: func(s trace.SpanContext) map[string]string {
				return map[string]string{"B3": b3Trace128 + "-" + s.SpanID().String() + "-1-" + b3Span}
			},
			wantGone: []string{"X-B3-Traceid", "X-B3-Spanid", "X-B3-Sampled"},
		},
		{
			name: "64-bit single stays 64-bit", in: map[string]string{"B3": b3Trace64 + "-" + b3Span + "-0"},
			sampled: false, trace: "0000000000000000" + b3Trace64, parent: b3Span,
			wantOut: func(s trace.SpanContext) map[string]string {
				return map[string]string{"B3": b3Trace64 + "-" + s.SpanID().String() + "-0-" + b3Span, "Traceparent": "00-0000000000000000" + b3Trace64 + "-" + s.SpanID().String() + "-00"}
			},
		},
		{
			name: "multi in, multi out", in: map[string]string{"X-B3-Traceid": b3Trace128, "X-B3-Spanid": b3Span, "X-B3-Sampled": "1"},
			sampled: true, trace: b3Trace128, parent: b3Span,
			wantOut: func(s trace.SpanContext) map[string]string {
				return map[string]string{"X-B3-Traceid": b3Trace128, "X-B3-Spanid": s.SpanID().String(), "X-B3-Parentspanid": b3Span, "X-B3-Sampled": "1", "Traceparent": "00-" + b3Trace128 + "-" + s.SpanID().String() + "-01"}
			},
		},
		{
			name: "multi debug keeps the flag", in: map[string]string{"X-B3-Traceid": b3Trace128, "X-B3-Spanid": b3Span, "X-B3-Flags": "1"},
			sampled: true, trace: b3Trace128, parent: b3Span,
			wantOut: func(s trace.SpanContext) map[string]string {
				return map[string]string{"X-B3-Flags": "1", "X-B3-Spanid": s.SpanID().String()}
			},
			wantGone: []string{"X-B3-Sampled"},
		},
		{
			name: "deferred: the sidecar decides", ratio: 1, in: map[string]string{"B3": b3Trace128 + "-" + b3Span},
			sampled: true, trace: b3Trace128, parent: b3Span,
			wantOut: func(s trace.SpanContext) map[string]string {
				return map[string]string{"B3": b3Trace128 + "-" + s.SpanID().String() + "-1-" + b3Span}
			},
		},
		{
			name: "decision alone starts a sampled trace", in: map[string]string{"B3": "1"},
			sampled: true,
			wantOut: func(s trace.SpanContext) map[string]string {
				return map[string]string{"B3": s.TraceID().String() + "-" + s.SpanID().String() + "-1"}
			},
		},
		{
			name: "deny alone is not sampled at ratio 1", ratio: 1, in: map[string]string{"X-B3-Sampled": "0"},
			sampled: false,
			wantOut: func(s trace.SpanContext) map[string]string {
				return map[string]string{"X-B3-Sampled": "0", "X-B3-Traceid": s.TraceID().String()}
			},
		},
		{
			name: "traceparent wins, B3 follows it", in: map[string]string{"Traceparent": "00-" + b3Trace128 + "-" + b3Parent + "-01", "B3": strings.Repeat("1", 32) + "-" + b3Span + "-0"},
			sampled: true, trace: b3Trace128, parent: b3Parent,
			wantOut: func(s trace.SpanContext) map[string]string {
				return map[string]string{"B3": b3Trace128 + "-" + s.SpanID().String() + "-1-" + b3Parent}
			},
		},
		{
			name: "from a peer sidecar: both agree, B3 keeps width and debug", in: map[string]string{"Traceparent": "00-0000000000000000" + b3Trace64 + "-" + b3Span + "-01", "B3": b3Trace64 + "-" + b3Span + "-d-" + b3Parent},
			sampled: true, trace: "0000000000000000" + b3Trace64, parent: b3Span,
			wantOut: func(s trace.SpanContext) map[string]string {
				return map[string]string{"B3": b3Trace64 + "-" + s.SpanID().String() + "-d-" + b3Span}
			},
		},
		{
			name: "no B3 in, none out", in: map[string]string{"Traceparent": "00-" + b3Trace128 + "-" + b3Parent + "-01"},
			sampled: true, trace: b3Trace128, parent: b3Parent,
			wantOut:  func(trace.SpanContext) map[string]string { return nil },
			wantGone: []string{"B3", "X-B3-Traceid", "X-B3-Spanid", "X-B3-Sampled"},
		},
		{
			name: "malformed B3 is left alone and starts no trace", in: map[string]string{"B3": "zz-" + b3Span + "-1"},
			sampled: false,
			wantOut: func(trace.SpanContext) map[string]string { return map[string]string{"B3": "zz-" + b3Span + "-1"} },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, exp := newTestTracing(tc.ratio)
			r := httptest.NewRequest("GET", "http://api/hello", nil)
			for k, v := range tc.in {
				r.Header.Set(k, v)
			}
			span := tr.start(r, trace.SpanKindServer, "inbound", "api")
			sc := span.SpanContext()
			tr.end(span, 200, "")
			if sc.IsSampled() != tc.sampled {
				t.Fatalf("sampled %v, want %v", sc.IsSampled(), tc.sampled)
			}
			if tc.trace != "" && sc.TraceID().String() != tc.trace {
				t.Fatalf("trace %s, want %s", sc.TraceID(), tc.trace)
			}
			if spans := exp.GetSpans(); tc.sampled != (len(spans) == 1) {
				t.Fatalf("%d spans exported, sampled %v", len(spans), tc.sampled)
			} else if tc.parent != "" && len(spans) == 1 && spans[0].Parent.SpanID().String() != tc.parent {
				t.Fatalf("parent %s, want %s", spans[0].Parent.SpanID(), tc.parent)
			}
			for k, want := range tc.wantOut(sc) {
				if got := r.Header.Values(k); len(got) != 1 || got[0] != want {
					t.Errorf("%s: %q, want %q", k, got, want)
				}
			}
			for _, k := range tc.wantGone {
				if v := r.Header.Get(k); v != "" {
					t.Errorf("%s: %q, want none", k, v)
				}
			}
		})
	}
}

// FuzzB3Extract: no header crashes the extraction, and whatever it takes
// survives a round trip through injection.
func FuzzB3Extract(f *testing.F) {
	f.Add(b3Trace128+"-"+b3Span+"-1-"+b3Parent, "", "", "", "")
	f.Add(b3Trace64+"-"+b3Span, "", "", "", "")
	f.Add("d", "", "", "", "")
	f.Add("", b3Trace128, b3Span, "1", "")
	f.Add("", b3Trace64, b3Span, "", "1")
	f.Add("", "", "", "0", "")
	f.Add(b3Trace128+"--"+b3Span, "x", "y", "true", "2")
	f.Fuzz(func(t *testing.T, single, traceID, spanID, sampled, flags string) {
		h := http.Header{}
		for k, v := range map[string]string{"B3": single, "X-B3-Traceid": traceID, "X-B3-Spanid": spanID, "X-B3-Sampled": sampled, "X-B3-Flags": flags} {
			if v != "" {
				h[k] = []string{v}
			}
		}
		c := extractB3(h)
		if c.form == b3None {
			if c.sc.IsValid() {
				t.Fatalf("no form but a span: %+v", c)
			}
			return
		}
		if !c.sc.IsValid() {
			return
		}
		child := trace.NewSpanContext(trace.SpanContextConfig{TraceID: c.sc.TraceID(), SpanID: trace.SpanID{1}, TraceFlags: c.sc.TraceFlags()})
		out := http.Header{}
		injectB3(out, c, c.sc, child)
		back := extractB3(out)
		if back.form != c.form || back.sc.TraceID() != c.sc.TraceID() || back.sc.SpanID() != child.SpanID() || back.short != c.short || back.sc.IsSampled() != c.sc.IsSampled() {
			t.Fatalf("round trip of %v: %+v, want trace %s span %s form %v", h, back, c.sc.TraceID(), child.SpanID(), c.form)
		}
	})
}
