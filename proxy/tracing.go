package proxy

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// tracing makes one span per request the sidecar handles — a client span
// for the app's outgoing call, a server span for an incoming one — and
// exports them to an OpenTelemetry collector over OTLP/HTTP. The W3C
// traceparent the request came with (or, without one, its B3 headers:
// b3.go) is the span's parent, and the one sent on (to the peer sidecar
// or to the app) names the new span, so the app's own spans and the two
// sidecars' join one trace. A request that came with B3 leaves with both
// traceparent and B3. Off (nil) unless
// --otlp-endpoint is given: then nothing on the request path changes.
// Sampling every request costs a large share of a sidecar's CPU; at the
// default ratio the cost is small once unsampled spans build no
// attributes (bench/README.md, "Figures once quoted in the code").
type tracing struct {
	tp     *sdktrace.TracerProvider
	tracer trace.Tracer
	prop   propagation.TraceContext
}

// checkOTLPEndpoint validates --otlp-endpoint: an http(s) URL of a
// collector; without a path, OTLP's /v1/traces.
func checkOTLPEndpoint(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("proxy: --otlp-endpoint %q: want http(s)://HOST:PORT[/PATH] of an OTLP/HTTP collector", s)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/traces"
	}
	return u.String(), nil
}

// maxSpanAttrBytes bounds a span attribute's value and the service in its
// name.
const maxSpanAttrBytes = 1024

func newTracing(c *checked, spiffeID string) (*tracing, error) {
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(c.otlpURL))
	if err != nil {
		return nil, fmt.Errorf("proxy: --otlp-endpoint: %w", err)
	}
	res := resource.NewSchemaless(
		attribute.String("service.name", c.Service),
		attribute.String("sigil.spiffe_id", spiffeID),
		attribute.String("telemetry.sdk.name", "sigil-proxy"),
	)
	// Attribute values come from the request (path, host): bounded, so
	// that the batcher's queue of spans (2,048) cannot hold 64 KiB each.
	limits := sdktrace.NewSpanLimits()
	limits.AttributeValueLengthLimit = maxSpanAttrBytes
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithRawSpanLimits(limits),
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		// A caller's sampling decision stands; new traces are sampled at
		// the configured ratio (Istio's default is 1%).
		// A B3 caller may defer the decision to the sidecar: b3Sampler.
		sdktrace.WithSampler(newB3Sampler(c.TraceSampling)),
	)
	return &tracing{tp: tp, tracer: tp.Tracer("github.com/sigil-mesh/sigil/proxy")}, nil
}

// start begins r's span and rewrites r's traceparent (and tracestate,
// and B3 headers if it came with them) to name it, for whoever r goes to
// next. A valid traceparent wins over B3.
func (t *tracing) start(r *http.Request, kind trace.SpanKind, direction, service string) trace.Span {
	h := propagation.HeaderCarrier(r.Header)
	ctx := t.prop.Extract(r.Context(), h)
	b3 := extractB3(r.Header)
	if w3c := trace.SpanContextFromContext(ctx); w3c.IsValid() {
		// The trace is traceparent's; B3 only follows it, keeping its
		// width and debug flag when both name the same trace (as they do
		// from a peer sidecar).
		if !b3.sc.IsValid() || b3.sc.TraceID() != w3c.TraceID() {
			b3.sampling, b3.short = b3Deferred, false
		}
	} else {
		if b3.sc.IsValid() {
			ctx = trace.ContextWithRemoteSpanContext(ctx, b3.sc)
		}
		ctx = withB3Decision(ctx, b3)
	}
	parent := trace.SpanContextFromContext(ctx)
	if len(service) > maxSpanAttrBytes {
		service = service[:maxSpanAttrBytes] // an outbound Host is the app's to choose
	}
	ctx, span := t.tracer.Start(ctx, direction+" "+service, trace.WithSpanKind(kind))
	// Most requests are not sampled: their spans record nothing, so
	// nothing is built for them.
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("http.request.method", r.Method),
			attribute.String("url.path", r.URL.Path),
			attribute.String("server.address", strings.ToLower(r.Host)),
			attribute.String("sigil.direction", direction),
			attribute.String("sigil.service", service),
		)
	}
	t.prop.Inject(ctx, h)
	injectB3(r.Header, b3, parent, span.SpanContext())
	return span
}

// end closes a span with the response status and, for an inbound call,
// who the caller was.
func (t *tracing) end(span trace.Span, status int, peer string) {
	if !span.IsRecording() {
		span.End()
		return
	}
	span.SetAttributes(attribute.Int("http.response.status_code", status))
	if peer != "" {
		span.SetAttributes(attribute.String("sigil.source.principal", peer))
	}
	if status >= 500 {
		span.SetStatus(codes.Error, http.StatusText(status))
	}
	span.End()
}

// shutdown sends what is still batched.
func (t *tracing) shutdown(ctx context.Context) error {
	return t.tp.Shutdown(ctx)
}
