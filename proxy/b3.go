package proxy

import (
	"context"
	"encoding/hex"
	"net/http"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// B3 is Zipkin's trace context (github.com/openzipkin/b3-propagation),
// which Istio's sidecars and many apps still send: either one header,
//
//	b3: {TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]]
//	b3: {SamplingState}                       (a decision alone)
//
// or several, X-B3-TraceId, X-B3-SpanId, X-B3-ParentSpanId, X-B3-Sampled
// and X-B3-Flags. The sidecar reads either beside W3C traceparent and, on a
// request that came with B3, writes B3 back in the same form, naming its
// own span, so an app that only speaks B3 stays in the trace.
//
// Parsing is strict, as the specification writes it: a TraceId of 16 or 32
// lower-hex digits, SpanId and ParentSpanId of 16, none all zero; a
// SamplingState of 1, 0 or d; X-B3-Sampled 1 or 0 (or the legacy true and
// false the specification lets a reader accept); X-B3-Flags 1; each
// header at most once and none empty. Anything else is malformed, and a
// malformed B3 is ignored as if absent (the request still goes through,
// in a new trace unless a traceparent names one).

// The B3 headers, in net/http's canonical form.
const (
	b3Single       = "B3"
	b3TraceID      = "X-B3-Traceid"
	b3SpanID       = "X-B3-Spanid"
	b3ParentSpanID = "X-B3-Parentspanid"
	b3Sampled      = "X-B3-Sampled"
	b3Flags        = "X-B3-Flags"
)

// b3Form says which B3 headers a request came with.
type b3Form uint8

const (
	b3None b3Form = iota
	b3FormSingle
	b3FormMulti
)

// b3Sampling is the caller's sampling state.
type b3Sampling uint8

const (
	// b3Deferred: the caller left the decision to the next hop.
	b3Deferred b3Sampling = iota
	b3Deny
	b3Accept
	// b3Debug: accept, and the caller asked for debug tracing.
	b3Debug
)

// b3Context is what a request's B3 headers carried. form is b3None when
// it came with none, or with malformed ones.
type b3Context struct {
	form     b3Form
	sampling b3Sampling
	// sc is the caller's span; invalid when the headers carried only a
	// sampling decision.
	sc trace.SpanContext
	// short: the TraceId had 16 digits (64 bits); it leaves with 16 too.
	short bool
}

// extractB3 reads h's B3 headers. The single header, when present, wins
// over the multiple ones (as in the specification); a malformed one is
// not made up for by the others.
func extractB3(h http.Header) b3Context {
	if vs, ok := h[b3Single]; ok {
		if len(vs) != 1 {
			return b3Context{}
		}
		c, ok := parseB3Single(vs[0])
		if !ok {
			return b3Context{}
		}
		c.form = b3FormSingle
		return c
	}
	c, ok := parseB3Multi(h)
	if !ok {
		return b3Context{}
	}
	return c
}

// parseB3Single parses the value of a b3 header.
func parseB3Single(v string) (b3Context, bool) {
	var c b3Context
	if len(v) == 1 {
		s, ok := parseSamplingState(v)
		c.sampling = s
		return c, ok
	}
	var fields [4]string
	n := 0
	for start, i := 0, 0; i <= len(v); i++ {
		if i < len(v) && v[i] != '-' {
			continue
		}
		if n == len(fields) {
			return c, false
		}
		fields[n], n, start = v[start:i], n+1, i+1
	}
	if n < 2 {
		return c, false
	}
	tid, short, ok := parseB3TraceID(fields[0])
	if !ok {
		return c, false
	}
	sid, ok := parseB3SpanID(fields[1])
	if !ok {
		return c, false
	}
	if n >= 3 {
		if c.sampling, ok = parseSamplingState(fields[2]); !ok {
			return c, false
		}
	}
	if n == 4 {
		if _, ok := parseB3SpanID(fields[3]); !ok {
			return c, false
		}
	}
	c.sc, c.short = remoteSpan(tid, sid, c.sampling), short
	return c, true
}

// parseSamplingState parses b3's SamplingState field.
func parseSamplingState(v string) (b3Sampling, bool) {
	switch v {
	case "0":
		return b3Deny, true
	case "1":
		return b3Accept, true
	case "d":
		return b3Debug, true
	}
	return b3Deferred, false
}

// parseB3Multi parses the X-B3-* headers. A request with none of them has
// no B3 context, and that is not an error.
func parseB3Multi(h http.Header) (b3Context, bool) {
	var v [5]string
	seen := false
	for i, name := range [...]string{b3TraceID, b3SpanID, b3ParentSpanID, b3Sampled, b3Flags} {
		vs, ok := h[name]
		if !ok {
			continue
		}
		if len(vs) != 1 || vs[0] == "" {
			return b3Context{}, false
		}
		v[i], seen = vs[0], true
	}
	if !seen {
		return b3Context{}, false
	}
	traceID, spanID, parent, sampled, flags := v[0], v[1], v[2], v[3], v[4]
	c := b3Context{form: b3FormMulti}
	switch sampled {
	case "":
	case "1", "true":
		c.sampling = b3Accept
	case "0", "false":
		c.sampling = b3Deny
	default:
		return b3Context{}, false
	}
	switch flags {
	case "":
	case "1":
		c.sampling = b3Debug
	default:
		return b3Context{}, false
	}
	if traceID == "" && spanID == "" && parent == "" {
		return c, true // a sampling decision alone
	}
	tid, short, ok := parseB3TraceID(traceID)
	if !ok {
		return b3Context{}, false
	}
	sid, ok := parseB3SpanID(spanID)
	if !ok {
		return b3Context{}, false
	}
	if parent != "" {
		if _, ok := parseB3SpanID(parent); !ok {
			return b3Context{}, false
		}
	}
	c.sc, c.short = remoteSpan(tid, sid, c.sampling), short
	return c, true
}

func remoteSpan(tid trace.TraceID, sid trace.SpanID, s b3Sampling) trace.SpanContext {
	var flags trace.TraceFlags
	if s == b3Accept || s == b3Debug {
		flags = trace.FlagsSampled
	}
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: flags, Remote: true})
}

// parseB3TraceID parses 16 or 32 lower-hex digits, not all zero; short
// reports 16.
func parseB3TraceID(s string) (id trace.TraceID, short, ok bool) {
	switch len(s) {
	case 32:
		ok = decodeLowerHex(id[:], s)
	case 16:
		ok, short = decodeLowerHex(id[8:], s), true
	}
	return id, short, ok && id.IsValid()
}

// parseB3SpanID parses 16 lower-hex digits, not all zero.
func parseB3SpanID(s string) (id trace.SpanID, ok bool) {
	if len(s) != 16 {
		return id, false
	}
	return id, decodeLowerHex(id[:], s) && id.IsValid()
}

// decodeLowerHex decodes s into dst, refusing upper case, which B3
// (like traceparent) does not allow.
func decodeLowerHex(dst []byte, s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	_, err := hex.Decode(dst, []byte(s))
	return err == nil
}

// injectB3 writes span sc, a child of parent, into h in the B3 form the
// request came with (in); nothing when it came without B3.
func injectB3(h http.Header, in b3Context, parent, sc trace.SpanContext) {
	if in.form == b3None || !sc.IsValid() {
		return
	}
	tid := sc.TraceID()
	traceID := hex.EncodeToString(tid[:])
	if in.short && [8]byte(tid[:8]) == [8]byte{} {
		traceID = traceID[16:]
	}
	spanID := sc.SpanID().String()
	parentID := ""
	if parent.IsValid() && parent.TraceID() == tid {
		parentID = parent.SpanID().String()
	}
	debug := in.sampling == b3Debug
	switch in.form {
	case b3FormSingle:
		state := "0"
		switch {
		case debug:
			state = "d"
		case sc.IsSampled():
			state = "1"
		}
		v := traceID + "-" + spanID + "-" + state
		if parentID != "" {
			v += "-" + parentID
		}
		h[b3Single] = []string{v}
		// Multi headers beside a single one were not read (the single
		// wins); left as they came, they would name the caller's span.
		for _, k := range [...]string{b3TraceID, b3SpanID, b3ParentSpanID, b3Sampled, b3Flags} {
			delete(h, k)
		}
	case b3FormMulti:
		h[b3TraceID] = []string{traceID}
		h[b3SpanID] = []string{spanID}
		delete(h, b3ParentSpanID)
		if parentID != "" {
			h[b3ParentSpanID] = []string{parentID}
		}
		delete(h, b3Sampled)
		delete(h, b3Flags)
		switch {
		case debug:
			h[b3Flags] = []string{"1"} // implies accept; Sampled is not sent with it
		case sc.IsSampled():
			h[b3Sampled] = []string{"1"}
		default:
			h[b3Sampled] = []string{"0"}
		}
	}
}

// b3DecisionKey marks a request context with the caller's B3 sampling
// state where the parent span alone cannot carry it.
type b3DecisionKey struct{}

// withB3Decision notes in ctx a B3 sampling state the sampler must see:
// a deferred decision (the parent span reads as unsampled, yet the
// sidecar is to decide), or a decision sent without a span.
func withB3Decision(ctx context.Context, c b3Context) context.Context {
	if c.form == b3None || (c.sc.IsValid() && c.sampling != b3Deferred) {
		return ctx
	}
	return context.WithValue(ctx, b3DecisionKey{}, c.sampling)
}

// b3Sampler is the sidecar's sampler: parent based (a caller's decision
// stands; new traces at the configured ratio), except that a B3 caller
// that deferred gets the ratio's decision, and a B3 decision sent without
// a trace decides the new trace.
type b3Sampler struct {
	parentBased sdktrace.Sampler
	ratio       sdktrace.Sampler
}

func newB3Sampler(ratio float64) b3Sampler {
	r := sdktrace.TraceIDRatioBased(ratio)
	return b3Sampler{parentBased: sdktrace.ParentBased(r), ratio: r}
}

// ShouldSample implements sdktrace.Sampler.
func (s b3Sampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	d, ok := p.ParentContext.Value(b3DecisionKey{}).(b3Sampling)
	if !ok {
		return s.parentBased.ShouldSample(p)
	}
	ts := trace.SpanContextFromContext(p.ParentContext).TraceState()
	switch d {
	case b3Accept, b3Debug:
		return sdktrace.SamplingResult{Decision: sdktrace.RecordAndSample, Tracestate: ts}
	case b3Deny:
		return sdktrace.SamplingResult{Decision: sdktrace.Drop, Tracestate: ts}
	default:
		return s.ratio.ShouldSample(p)
	}
}

// Description implements sdktrace.Sampler.
func (s b3Sampler) Description() string {
	return "SigilB3Aware{" + s.parentBased.Description() + "}"
}
