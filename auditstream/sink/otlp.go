package sink

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploghttp"
	"go.opentelemetry.io/otel/log"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	"go.opentelemetry.io/otel/sdk/resource"

	"github.com/sigil-mesh/sigil/auditstream"
)

// OTLP sink defaults.
const (
	// DefaultOTLPPath is OTLP/HTTP's logs path.
	DefaultOTLPPath = "/v1/logs"
	// DefaultOTLPTimeout bounds one export request.
	DefaultOTLPTimeout = 10 * time.Second
	// otlpScope is the instrumentation scope of the exported logs.
	otlpScope = "github.com/sigil-mesh/sigil/auditstream"
)

func init() {
	register("otlp+http", openOTLP)
	register("otlp+https", openOTLP)
}

// openOTLP is the OTLP logs sink's Opener (OTLP/HTTP, protobuf):
//
//	otlp+http://127.0.0.1:4318?service-name=sigil
//	otlp+https://collector:4318/v1/logs?ca=/etc/sigil/otel-ca.pem&cert=c.pem&key=k.pem&compression=gzip&timeout=10s
//
// The path defaults to /v1/logs. Request headers (a receiver's
// credentials) come from OTEL_EXPORTER_OTLP_LOGS_HEADERS or
// OTEL_EXPORTER_OTLP_HEADERS, as in every OpenTelemetry SDK, never from
// the spec, which is logged.
func openOTLP(u *url.URL) (Sink, error) {
	secure := strings.EqualFold(u.Scheme, "otlp+https")
	known := []string{"service-name", "compression", "timeout"}
	if secure {
		known = append(known, "ca", "cert", "key", "server-name")
	}
	q, err := parseSpecQuery(u, known...)
	if err != nil {
		return nil, err
	}
	if u.Host == "" || u.User != nil || u.Fragment != "" {
		return nil, fmt.Errorf("sink: otlp: want %s://HOST:PORT[/PATH] with no user or fragment", u.Scheme)
	}
	timeout, err := q.duration("timeout", DefaultOTLPTimeout)
	if err != nil || timeout == 0 {
		return nil, fmt.Errorf("sink: otlp: parameter timeout=%q: want a duration above 0 such as 10s", q.str("timeout", ""))
	}
	endpoint := url.URL{Scheme: "http", Host: u.Host, Path: u.Path}
	if secure {
		endpoint.Scheme = "https"
	}
	if endpoint.Path == "" || endpoint.Path == "/" {
		endpoint.Path = DefaultOTLPPath
	}
	opts := []otlploghttp.Option{
		otlploghttp.WithEndpointURL(endpoint.String()),
		otlploghttp.WithTimeout(timeout),
		// The spool in front retries; a retry inside Export would only
		// hold the batch longer.
		otlploghttp.WithRetry(otlploghttp.RetryConfig{Enabled: false}),
	}
	switch c := q.str("compression", "gzip"); c {
	case "gzip":
		opts = append(opts, otlploghttp.WithCompression(otlploghttp.GzipCompression))
	case "none":
		opts = append(opts, otlploghttp.WithCompression(otlploghttp.NoCompression))
	default:
		return nil, fmt.Errorf("sink: otlp: parameter compression=%q: want gzip or none", c)
	}
	if secure {
		tc, err := tlsFromSpec(q, u.Hostname())
		if err != nil {
			return nil, err
		}
		opts = append(opts, otlploghttp.WithTLSClientConfig(tc))
	}
	svc := q.str("service-name", "sigil")
	if svc == "" {
		return nil, fmt.Errorf("sink: otlp: parameter service-name is empty")
	}
	exp, err := otlploghttp.New(context.Background(), opts...)
	if err != nil {
		return nil, fmt.Errorf("sink: otlp: %w", err)
	}
	return newOTLPSink(exp, endpoint.Redacted(), svc), nil
}

// logExporter is the part of otlploghttp.Exporter the sink uses.
type logExporter interface {
	Export(ctx context.Context, recs []sdklog.Record) error
	Shutdown(ctx context.Context) error
}

// otlpSink turns each batch into OpenTelemetry log records and exports
// them in one synchronous request: the SDK's batch processor is not
// used, as it would report success before delivery. Records are built by
// a LoggerProvider (which gives them their resource and scope) whose one
// processor only collects them for Export.
type otlpSink struct {
	endpoint string
	exp      logExporter

	mu      sync.Mutex // serializes Export: collected is per batch
	logger  log.Logger
	collect *collector
	closed  bool
}

// newOTLPSink makes the sink over exp, with resource service.name=svc.
func newOTLPSink(exp logExporter, endpoint, svc string) *otlpSink {
	c := &collector{}
	lp := sdklog.NewLoggerProvider(
		sdklog.WithResource(resource.NewSchemaless(attribute.String("service.name", svc))),
		sdklog.WithProcessor(c),
		// No limits from the environment: a record is exported whole.
		sdklog.WithAttributeCountLimit(-1),
		sdklog.WithAttributeValueLengthLimit(-1),
	)
	return &otlpSink{endpoint: endpoint, exp: exp, logger: lp.Logger(otlpScope), collect: c}
}

// collector is a Processor that keeps what is emitted until Export takes
// it.
type collector struct{ recs []sdklog.Record }

func (*collector) Enabled(context.Context, sdklog.EnabledParameters) bool { return true }
func (c *collector) OnEmit(_ context.Context, r *sdklog.Record) error {
	c.recs = append(c.recs, r.Clone())
	return nil
}
func (*collector) Shutdown(context.Context) error   { return nil }
func (*collector) ForceFlush(context.Context) error { return nil }

// otlpSeverity maps severityOf's RFC 5424 severities to OpenTelemetry's
// (the log data model's syslog mapping: notice is INFO2).
var otlpSeverity = map[int]struct {
	sev  log.Severity
	text string
}{
	sevError:   {log.SeverityError, "ERROR"},
	sevWarning: {log.SeverityWarn, "WARN"},
	sevNotice:  {log.SeverityInfo2, "NOTICE"},
	sevInfo:    {log.SeverityInfo, "INFO"},
}

// Export sends recs as one OTLP ExportLogsServiceRequest and returns nil
// only when the receiver accepted all of them; a partial success (some
// records rejected) is an error, so the spool sends the batch again.
func (s *otlpSink) Export(ctx context.Context, recs []auditstream.Record) error {
	if len(recs) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("sink: otlp: %s: sink closed", s.endpoint)
	}
	s.collect.recs = s.collect.recs[:0]
	for i := range recs {
		lr, err := otlpRecord(recs[i])
		if err != nil {
			return err
		}
		s.logger.Emit(ctx, lr)
	}
	if err := s.exp.Export(ctx, s.collect.recs); err != nil {
		return fmt.Errorf("sink: otlp: exporting %d records to %s: %w", len(recs), s.endpoint, err)
	}
	return nil
}

// otlpRecord is r as a log record: its time, a severity as syslog's, the
// record's JSON as the body (so a receiver can check its hash), its type
// as the event name, and its id and chain fields as attributes.
func otlpRecord(r auditstream.Record) (log.Record, error) {
	body, err := json.Marshal(&r)
	if err != nil {
		return log.Record{}, fmt.Errorf("sink: otlp: encoding record %s: %w", r.DecisionID, err)
	}
	var lr log.Record
	lr.SetTimestamp(r.Timestamp)
	lr.SetObservedTimestamp(time.Now())
	sev := otlpSeverity[severityOf(r)]
	lr.SetSeverity(sev.sev)
	lr.SetSeverityText(sev.text)
	lr.SetEventName(r.Sigil.Type)
	lr.SetBody(attribute.StringValue(string(body)))
	attrs := []attribute.KeyValue{
		attribute.String("decision_id", r.DecisionID),
		attribute.String("sigil.type", r.Sigil.Type),
		attribute.String("sigil.writer", r.Sigil.Writer),
		attribute.Int64("sigil.seq", r.Sigil.Seq),
		attribute.String("sigil.hash", r.Sigil.Hash),
		attribute.String("sigil.prev_hash", r.Sigil.Prev),
	}
	for _, kv := range []struct{ k, v string }{{"sigil.actor", r.Sigil.Actor}, {"sigil.mode", r.Sigil.Mode}, {"sigil.subject", r.Sigil.Subject}} {
		if kv.v != "" {
			attrs = append(attrs, attribute.String(kv.k, kv.v))
		}
	}
	if r.Sigil.Type == auditstream.TypeGap {
		attrs = append(attrs, attribute.Int64("sigil.lost", r.Sigil.Lost))
	}
	lr.AddAttributes(attrs...)
	return lr, nil
}

// Close shuts the exporter down.
func (s *otlpSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return s.exp.Shutdown(context.Background())
}
