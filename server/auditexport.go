package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/audit"
	"github.com/sigil-mesh/sigil/auditstream"
	"github.com/sigil-mesh/sigil/auditstream/export"
	"github.com/sigil-mesh/sigil/auditstream/sink"
	"github.com/sigil-mesh/sigil/auditstream/spool"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/server/registry"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DefaultAuditSpoolMaxBytes is --audit-spool-max-bytes' default.
const DefaultAuditSpoolMaxBytes = 256 << 20

// auditSpoolDir is the server's audit spool, under the data dir.
func auditSpoolDir(dataDir string) string { return filepath.Join(dataDir, "audit-spool") }

// checkAuditExport validates --audit-export and --audit-spool-max-bytes:
// each spec is opened once (and closed), so a bad one is refused at start,
// named.
func checkAuditExport(c Config) []error {
	var errs []error
	seen := map[string]bool{}
	for _, spec := range c.AuditExport {
		if seen[spec] {
			errs = append(errs, fmt.Errorf("--audit-export %s: given twice", sink.Redacted(spec)))
			continue
		}
		seen[spec] = true
		sk, err := sink.Open(spec)
		if err != nil {
			errs = append(errs, fmt.Errorf("--audit-export: %w", err))
			continue
		}
		sk.Close()
	}
	if c.AuditSpoolMaxBytes < 0 {
		errs = append(errs, fmt.Errorf("--audit-spool-max-bytes %d: want 0 (the default, %d) or more", c.AuditSpoolMaxBytes, DefaultAuditSpoolMaxBytes))
	}
	return errs
}

// auditStream is the server's one audit stream: its own CA events (sealed
// in the server's chain) and the decisions agents pass on, in one spool
// that each exporter reads with its own cursor. Without exporters there
// is none: decisions agents send are acknowledged and discarded (counted).
type auditStream struct {
	sp        *spool.Spool
	runners   []*export.Runner
	discarded atomic.Int64
	warnOnce  sync.Once
}

// openAuditStream opens the spool (writer: the server's SPIFFE ID and an
// instance kept in the spool) and makes the exporters; nil without
// --audit-export.
func openAuditStream(c *checked, log *slog.Logger) (*auditStream, error) {
	if len(c.AuditExport) == 0 {
		return &auditStream{}, nil
	}
	dir := auditSpoolDir(c.DataDir)
	writer, err := spool.Instance(dir, naming.ServerID(c.td).String())
	if err != nil {
		return nil, fmt.Errorf("server: audit spool: %w", err)
	}
	names := make([]string, len(c.AuditExport))
	for i, spec := range c.AuditExport {
		names[i] = export.ConsumerName(spec)
	}
	max := c.AuditSpoolMaxBytes
	if max == 0 {
		max = DefaultAuditSpoolMaxBytes
	}
	sp, err := spool.Open(dir, spool.Options{MaxBytes: max, Consumers: names, Writer: writer})
	if err != nil {
		return nil, fmt.Errorf("server: audit spool: %w", err)
	}
	a := &auditStream{sp: sp}
	for i, spec := range c.AuditExport {
		sk, err := sink.Open(spec)
		if err != nil {
			a.close()
			return nil, fmt.Errorf("server: --audit-export: %w", err)
		}
		a.runners = append(a.runners, export.New(sp, names[i], sk, log))
		log.Info("audit exporter", "exporter", names[i], "spec", sink.Redacted(spec))
	}
	log.Info("audit export on", "writer", writer, "spool", dir, "spool_max_bytes", max, "exporters", len(a.runners))
	return a, nil
}

// collectors are the audit stream's metrics (docs/metrics.md).
func (a *auditStream) collectors() []prometheus.Collector {
	out := []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sigil_server_audit_discarded_records_total",
			Help: "Audit records agents sent that were discarded because the server has no --audit-export."},
			func() float64 { return float64(a.discarded.Load()) }),
	}
	if a.sp != nil {
		out = append(out, export.Metrics(a.sp, a.runners...))
	}
	return out
}

// run runs the exporters until ctx is done.
func (a *auditStream) run(ctx context.Context, wg *sync.WaitGroup) {
	for _, r := range a.runners {
		wg.Add(1)
		go func() { defer wg.Done(); r.Run(ctx) }()
	}
}

func (a *auditStream) close() {
	if a.sp != nil {
		a.sp.Close()
	}
}

// tee appends a CA event of the trail to the stream as a record (type the
// event's, actor, subject, details and the trail's seq). It runs under
// the trail's lock, after the event is on disk: a failure here is counted
// and shows as a gap in the server's chain, and never fails the action.
func (a *auditStream) tee(e audit.Event) {
	if a.sp == nil {
		return
	}
	details := make(map[string]string, len(e.Details)+2)
	for k, v := range e.Details {
		details[k] = v
	}
	details["trail_seq"] = strconv.FormatInt(e.Seq, 10)
	if e.Intent {
		details["intent"] = "true"
	}
	rec := auditstream.Record{DecisionID: auditstream.NewID(), Timestamp: e.Time.UTC(), Path: auditstream.PathEvent(e.Type),
		Labels: map[string]string{"type": "sigil-server"},
		Sigil:  auditstream.Meta{Type: e.Type, Actor: e.Actor, Subject: e.Subject, Details: details}}
	// A failure is counted by the spool (sigil_audit_dropped_records_total)
	// and recorded as a gap before the next event that fits.
	_ = a.sp.Append(&rec)
}

// auditRecordWriter is the part of a record ExportAudit checks: whose
// chain it is in, and that it is of a kind a sidecar writes.
type auditRecordWriter struct {
	Path  string `json:"path"`
	Sigil struct {
		Writer  string            `json:"writer"`
		Type    string            `json:"type"`
		Subject string            `json:"subject"`
		Details map[string]string `json:"details"`
	} `json:"sigil"`
}

// sidecarKind reports whether w is a kind of record a sidecar writes: a
// decision (path PathDecision) or a gap, with none of a CA event's
// fields. Anything else would pass for the CA's trail in the stream.
func (w auditRecordWriter) sidecarKind() bool {
	if w.Sigil.Subject != "" || w.Sigil.Details != nil {
		return false
	}
	switch w.Sigil.Type {
	case auditstream.TypeDecision:
		return w.Path == auditstream.PathDecision
	case auditstream.TypeGap:
		return w.Path == auditstream.PathEvent(auditstream.TypeGap)
	}
	return false
}

// ExportAudit implements agentv1.AgentServer: the calling agent passes
// its sidecars' audit records. Every record's writer must be an identity
// an entry grants to a workload of that agent (ID "#" instance), and the
// record a decision or a gap (never a CA event's type, path, subject or
// details); the batch is refused whole, naming the first that is not. Records already
// spooled (by writer and seq) are skipped, so a re-sent batch is not
// duplicated here.
func (s *Server) ExportAudit(ctx context.Context, req *agentv1.ExportAuditRequest) (*agentv1.ExportAuditResponse, error) {
	agent, entries, err := s.callerEntries(ctx)
	if err != nil {
		return nil, err
	}
	return s.acceptAudit(agent.String(), entries, req.GetRecords())
}

// acceptAudit is ExportAudit for agent, whose workloads hold entries.
func (s *Server) acceptAudit(agent string, entries []registry.Entry, records [][]byte) (*agentv1.ExportAuditResponse, error) {
	granted := make(map[string]bool, len(entries))
	for _, e := range entries {
		granted[e.SPIFFEID] = true
	}
	check := func(w auditRecordWriter) error {
		id, _, ok := strings.Cut(w.Sigil.Writer, "#")
		if !ok || !granted[id] {
			return status.Errorf(codes.PermissionDenied, "audit record of writer %q: %s is not an identity of a workload of agent %s", w.Sigil.Writer, id, agent)
		}
		if !w.sidecarKind() {
			return status.Errorf(codes.PermissionDenied, "audit record of writer %q: type %q, path %q: a sidecar writes decisions and gaps only, never a CA event", w.Sigil.Writer, w.Sigil.Type, w.Path)
		}
		return nil
	}
	if s.auditOut.sp == nil {
		for _, line := range records {
			var w auditRecordWriter
			if err := json.Unmarshal(line, &w); err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "audit record is not JSON: %v", err)
			}
			if err := check(w); err != nil {
				return nil, err
			}
		}
		s.auditOut.discarded.Add(int64(len(records)))
		s.auditOut.warnOnce.Do(func() {
			s.log.Warn("audit records from sidecars are discarded: the server has no --audit-export")
		})
		return &agentv1.ExportAuditResponse{Discarded: true}, nil
	}
	// Each record decoded once, by the spool, and checked here before
	// anything of the batch is written (at saturation a second decode
	// per record was ~15 % of the server's CPU).
	var refused error
	n, err := s.auditOut.sp.IngestChecked(records, func(r *auditstream.Record) error {
		w := auditRecordWriter{Path: r.Path}
		w.Sigil.Writer, w.Sigil.Type, w.Sigil.Subject, w.Sigil.Details = r.Sigil.Writer, r.Sigil.Type, r.Sigil.Subject, r.Sigil.Details
		refused = check(w)
		return refused
	})
	switch {
	case refused != nil:
		return nil, refused
	case errors.Is(err, spool.ErrFull):
		return nil, status.Error(codes.ResourceExhausted, "server: audit spool full; send again later")
	case err != nil:
		return nil, status.Errorf(codes.InvalidArgument, "audit record is not JSON or not a sealed record: %v", err)
	}
	return &agentv1.ExportAuditResponse{Accepted: int64(n), Duplicates: int64(len(records) - n)}, nil
}

// callerEntries returns the calling agent and the entries whose parent it
// is: the identities its workloads may hold.
func (s *Server) callerEntries(ctx context.Context) (spiffeid.ID, []registry.Entry, error) {
	agent, err := s.callerAgent(ctx)
	if err != nil {
		return spiffeid.ID{}, nil, err
	}
	entries, err := s.agentEntries(ctx, agent.String())
	if err != nil {
		return spiffeid.ID{}, nil, status.Error(codes.Unavailable, err.Error())
	}
	return agent, entries, nil
}
