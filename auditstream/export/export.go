// Package export runs the audit stream's exporters: each is a consumer of
// a spool (package spool) that reads a batch from its cursor, delivers it
// to its sink (package sink), and commits the cursor only once the sink
// took it; a failed batch is retried, from the same cursor, on Sigil's
// one backoff (internal/backoff: jittered, at most 5 s between tries).
// Delivery is therefore at least once: a batch the receiver took whose
// commit did not happen (the process was killed in between) is sent again.
package export

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sigil-mesh/sigil/auditstream"
	"github.com/sigil-mesh/sigil/auditstream/sink"
	"github.com/sigil-mesh/sigil/auditstream/spool"
	"github.com/sigil-mesh/sigil/internal/backoff"
	"github.com/sigil-mesh/sigil/internal/jsonenc"
)

// Batch bounds: a runner reads at most this many records, and about this
// many bytes, per delivery (a sink may split further, as the HTTP sink
// does by its upload size limit).
const (
	MaxBatchRecords = 500
	MaxBatchBytes   = 1 << 20
	// Linger is how long a runner waits for a batch to fill once records
	// are waiting (OPA's decision-log plugin waits min_delay_seconds): a
	// batch leaves when it is full or Linger after it began to wait, so a
	// busy sidecar sends a few large batches a second, not one per
	// request.
	Linger = time.Second
)

// LineSink is a sink that takes the records' JSON lines as they were
// spooled (the sidecar's shipper to its agent), sparing a decode.
type LineSink interface {
	ExportLines(ctx context.Context, lines [][]byte) error
}

// Runner exports one spool consumer's records to one sink.
type Runner struct {
	name string
	sp   *spool.Spool
	sink sink.Sink
	log  *slog.Logger

	exported atomic.Int64
	failed   atomic.Int64
}

// ConsumerName is the spool consumer name of an exporter spec: stable
// across restarts and independent of the order of the flags. It is a hash
// of the spec without its password (sink.Redacted), so it shows nothing
// of the password (it labels metrics) and stays when the password is
// rotated.
func ConsumerName(spec string) string {
	sum := sha256.Sum256([]byte(sink.Redacted(spec)))
	return "export-" + hex.EncodeToString(sum[:6])
}

// New returns the runner that exports consumer name's records of sp to s.
func New(sp *spool.Spool, name string, s sink.Sink, log *slog.Logger) *Runner {
	return &Runner{name: name, sp: sp, sink: s, log: log.With("exporter", name)}
}

// Name is the runner's spool consumer.
func (r *Runner) Name() string { return r.name }

// Run exports until ctx is done, then closes the sink.
func (r *Runner) Run(ctx context.Context) {
	defer r.sink.Close()
	var b backoff.Backoff
	failing, lingered := false, false
	for ctx.Err() == nil {
		wake := r.sp.Wake()
		batch, err := r.sp.Read(r.name, MaxBatchRecords, MaxBatchBytes)
		if err == nil && len(batch.Lines) == 0 {
			spool.Wait(ctx, wake)
			continue
		}
		if err == nil && !lingered && len(batch.Lines) < MaxBatchRecords {
			// Not full: let it fill for a while, then send what there is.
			backoff.Sleep(ctx, Linger, nil)
			lingered = true
			continue
		}
		lingered = false
		if err == nil {
			err = r.deliver(ctx, batch.Lines)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.failed.Add(1)
			wait := b.Next()
			if !failing {
				r.log.Warn("audit export failed; retrying the batch", "error", err, "records", len(batch.Lines), "retry_in", wait.String())
			}
			failing = true
			backoff.Sleep(ctx, wait, nil)
			continue
		}
		if failing {
			r.log.Info("audit export resumed", "records", len(batch.Lines))
		}
		failing = false
		b.Reset()
		r.exported.Add(int64(len(batch.Lines)))
		if err := r.sp.Commit(r.name, batch.Next); err != nil {
			// Delivered but not committed: sent again (at least once).
			r.log.Error("audit export cursor not saved", "error", err)
		}
	}
}

// deliver passes lines to the sink, decoded unless it takes lines.
func (r *Runner) deliver(ctx context.Context, lines [][]byte) error {
	if ls, ok := r.sink.(LineSink); ok {
		// A scan, not a decode: a line that is not JSON (a damaged
		// segment) would make the receiver refuse every retry of the
		// batch; passed over as the decoding path does.
		if !allValid(lines) {
			kept := make([][]byte, 0, len(lines))
			for _, l := range lines {
				if isJSON(l) {
					kept = append(kept, l)
				} else {
					r.log.Error("audit spool line is not a record; skipped", "error", "not JSON")
				}
			}
			if lines = kept; len(lines) == 0 {
				return nil
			}
		}
		return ls.ExportLines(ctx, lines)
	}
	recs := make([]auditstream.Record, 0, len(lines))
	for _, l := range lines {
		var rec auditstream.Record
		if err := json.Unmarshal(l, &rec); err != nil {
			// A spooled line that is not a record cannot be delivered
			// ever; passing it over keeps the rest flowing, and the
			// writer's chain shows the hole downstream.
			r.log.Error("audit spool line is not a record; skipped", "error", err)
			continue
		}
		recs = append(recs, rec)
	}
	if len(recs) == 0 {
		return nil
	}
	if err := r.sink.Export(ctx, recs); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return nil
}

// allValid reports whether every line is JSON.
func allValid(lines [][]byte) bool {
	for _, l := range lines {
		if !isJSON(l) {
			return false
		}
	}
	return true
}

// isJSON is json.Valid(line). The spool's lines are compact (sealed or
// checked on the way in), and jsonenc.IsCompact reads each byte once:
// json.Valid's state machine was ~15 % of the server's CPU at saturation
// (bench/README.md, session 25); it decides only what IsCompact refuses.
func isJSON(line []byte) bool { return jsonenc.IsCompact(line) || json.Valid(line) }

// Metrics returns the Prometheus collectors of a spool and its runners
// (docs/metrics.md, Audit export): records appended, dropped, spool
// bytes, and per exporter records exported, failed batches and lag.
func Metrics(sp *spool.Spool, runners ...*Runner) prometheus.Collector {
	return &collector{sp: sp, runners: runners}
}

var (
	descAppended = prometheus.NewDesc("sigil_audit_appended_records_total", "Audit records written to the spool (own and received).", nil, nil)
	descDropped  = prometheus.NewDesc("sigil_audit_dropped_records_total", "Audit records dropped because the spool was full or could not be written (each run of them is a gap record in the chain).", nil, nil)
	descBytes    = prometheus.NewDesc("sigil_audit_spool_bytes", "Bytes of audit spool segments on disk.", nil, nil)
	descExported = prometheus.NewDesc("sigil_audit_exported_records_total", "Audit records an exporter delivered.", []string{"exporter"}, nil)
	descFailed   = prometheus.NewDesc("sigil_audit_export_failures_total", "Audit export batches that failed and are retried.", []string{"exporter"}, nil)
	descLag      = prometheus.NewDesc("sigil_audit_export_lag_bytes", "Spooled bytes an exporter has not delivered yet.", []string{"exporter"}, nil)
)

type collector struct {
	sp      *spool.Spool
	runners []*Runner
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAppended, descDropped, descBytes, descExported, descFailed, descLag} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.sp.Stats()
	ch <- prometheus.MustNewConstMetric(descAppended, prometheus.CounterValue, float64(st.Appended))
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(st.Dropped))
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.GaugeValue, float64(st.Bytes))
	for _, r := range c.runners {
		ch <- prometheus.MustNewConstMetric(descExported, prometheus.CounterValue, float64(r.exported.Load()), r.name)
		ch <- prometheus.MustNewConstMetric(descFailed, prometheus.CounterValue, float64(r.failed.Load()), r.name)
		ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, float64(st.Lag[r.name]), r.name)
	}
}
