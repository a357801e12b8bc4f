package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	proxyv1 "github.com/sigil-mesh/sigil/api/proxy/v1"
	"github.com/sigil-mesh/sigil/auditstream"
	"github.com/sigil-mesh/sigil/auditstream/export"
	"github.com/sigil-mesh/sigil/auditstream/sink"
	"github.com/sigil-mesh/sigil/auditstream/spool"
	"github.com/sigil-mesh/sigil/policy"
)

// Audit export targets besides sink specs (--audit-export).
const (
	// AuditExportAgent ships decisions to the agent, which passes them
	// to the server's audit stream (the default).
	AuditExportAgent = "agent"
	// AuditExportNone records no decision for export.
	AuditExportNone = "none"
	// agentConsumer is the spool consumer of the shipper to the agent.
	agentConsumer = "agent"
)

// DefaultAuditSpoolMaxBytes bounds a sidecar's audit spool on disk.
const DefaultAuditSpoolMaxBytes = 64 << 20

// auditConfig is the checked audit export configuration.
type auditConfig struct {
	on       bool
	toAgent  bool
	sinks    []string // sink specs, each checked by opening it once
	spoolDir string
	mask     *policy.Mask
}

// checkAudit validates the audit export flags into out.audit.
func checkAudit(c Config, out *checked, errs *[]error) {
	a := &out.audit
	specs := c.AuditExport
	if len(specs) == 0 {
		specs = []string{AuditExportAgent}
	}
	for _, s := range specs {
		switch s {
		case AuditExportNone:
			if len(specs) > 1 {
				*errs = append(*errs, errors.New("proxy: --audit-export none: cannot be combined with other targets"))
			}
		case AuditExportAgent:
			a.toAgent, a.on = true, true
		default:
			sk, err := sink.Open(s)
			if err != nil {
				*errs = append(*errs, fmt.Errorf("proxy: --audit-export: %w", err))
				continue
			}
			sk.Close()
			a.sinks = append(a.sinks, s)
			a.on = true
		}
	}
	if c.AuditSpoolMaxBytes < 0 {
		*errs = append(*errs, fmt.Errorf("proxy: --audit-spool-max-bytes %d: want 0 (the default, %d) or more", c.AuditSpoolMaxBytes, DefaultAuditSpoolMaxBytes))
	}
	paths := c.DecisionLogMask
	if paths == nil {
		paths = policy.DefaultMask
	}
	m, err := policy.ParseMask(paths)
	if err != nil {
		*errs = append(*errs, fmt.Errorf("proxy: --decision-log-mask: %w", err))
	}
	a.mask = m
	a.spoolDir = c.AuditSpoolDir
	if a.spoolDir == "" {
		// Per user, service and inbound address, so two sidecars on a host
		// never share one, and a restarted sidecar finds its own again.
		// A sidecar on an ephemeral port (0) has no stable name: its spool
		// is its process's.
		port := c.Inbound[strings.LastIndexByte(c.Inbound, ':')+1:]
		if port == "" || port == "0" {
			port = fmt.Sprintf("pid%d", os.Getpid())
		}
		a.spoolDir = filepath.Join(os.TempDir(), fmt.Sprintf("sigil-proxy-%d", os.Getuid()), "audit-"+c.Service+"-"+port)
	}
}

// auditRecorder turns the sidecar's decisions into audit records and
// appends them to its spool (policy.Recorder). It never touches the
// network: shipping happens from the spool.
type auditRecorder struct {
	mask   *policy.Mask
	labels map[string]string
	sp     atomic.Pointer[spool.Spool]
	// bundles is the Bundles of the last revision recorded, shared by its
	// records (read only), so a decision does not build a map.
	bundles atomic.Pointer[revisionBundles]
	// notRecorded counts decisions not recorded, by reason (full, error,
	// not_ready); failClosed counts the requests that denied for it.
	notRecorded *prometheus.CounterVec
	// paused: the server keeps no audit stream, so decisions are not
	// recorded (see pauseWhileDiscarded).
	paused atomic.Bool
}

var _ policy.Recorder = (*auditRecorder)(nil)

func newAuditRecorder(mask *policy.Mask, labels map[string]string) *auditRecorder {
	return &auditRecorder{mask: mask, labels: labels, notRecorded: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sigil_audit_unrecorded_decisions_total",
		Help: "Decisions that could not be appended to the audit spool, by reason (full, error, not_ready).",
	}, []string{"reason"})}
}

// inputBufs holds the buffers a decision's masked input is encoded into
// (on the hot path: one 1 KiB allocation fewer per decision,
// BenchmarkAuditRecord).
var inputBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// maxKeptInputBuf bounds the input buffers kept in inputBufs: a larger
// input (many or long headers) is not kept.
const maxKeptInputBuf = 16 << 10

// errSpoolNotReady means a decision came before the spool was opened.
var errSpoolNotReady = errors.New("proxy: audit spool not open yet")

// Record implements policy.Recorder.
func (a *auditRecorder) Record(in *policy.Input, d policy.Decision) error {
	if a.paused.Load() {
		return nil
	}
	sp := a.sp.Load()
	if sp == nil {
		a.notRecorded.WithLabelValues("not_ready").Inc()
		return errSpoolNotReady
	}
	bp := inputBufs.Get().(*[]byte)
	input, erased, err := a.mask.AppendApply(*bp, in)
	defer func() {
		// sp.Append copied the input into the sealed line: nothing holds
		// it after Record.
		if cap(input) > maxKeptInputBuf {
			return
		}
		if input != nil {
			*bp = input[:0]
		}
		inputBufs.Put(bp)
	}()
	if err != nil {
		a.notRecorded.WithLabelValues("error").Inc()
		return err
	}
	rec := auditstream.Record{DecisionID: d.ID, Timestamp: time.Now().UTC(), Path: policy.Path, Labels: a.labels,
		Input: input, Erased: erased, Sigil: auditstream.Meta{Type: auditstream.TypeDecision, Mode: d.Mode, Actor: in.Source.Principal}}
	if d.Mode == "" {
		rec.Sigil.Mode = auditstream.ModeEnforce
	}
	if d.Err != nil {
		rec.Error = d.Err.Error()
	} else if d.Allow {
		rec.Result = resultTrue
	} else {
		rec.Result = resultFalse
	}
	if d.Revision != "" {
		rec.Bundles = a.bundlesOf(d.Revision)
	}
	if err := sp.Append(&rec); err != nil {
		reason := "error"
		if errors.Is(err, spool.ErrFull) {
			reason = "full"
		}
		a.notRecorded.WithLabelValues(reason).Inc()
		return err
	}
	return nil
}

// revisionBundles is a record's Bundles for one policy revision.
type revisionBundles struct {
	revision string
	bundles  map[string]auditstream.Bundle
}

// bundlesOf returns the Bundles of revision, built once per revision (on
// the hot path: one map fewer per decision, BenchmarkAuditRecord).
func (a *auditRecorder) bundlesOf(revision string) map[string]auditstream.Bundle {
	if b := a.bundles.Load(); b != nil && b.revision == revision {
		return b.bundles
	}
	b := &revisionBundles{revision: revision, bundles: map[string]auditstream.Bundle{"sigil": {Revision: revision}}}
	a.bundles.Store(b)
	return b.bundles
}

// A decision's result, shared by every record (read only).
var resultTrue, resultFalse = json.RawMessage("true"), json.RawMessage("false")

// startAudit opens the spool (writer: the sidecar's SPIFFE ID and the
// spool's instance) and starts its exporters; they stop with ctx.
func (p *Proxy) startAudit(ctx context.Context, wg *sync.WaitGroup) (func() error, error) {
	a := p.cfg.audit
	consumers := []string{}
	if a.toAgent {
		consumers = append(consumers, agentConsumer)
	}
	for _, s := range a.sinks {
		consumers = append(consumers, export.ConsumerName(s))
	}
	writer, err := spool.Instance(a.spoolDir, p.id.id.String())
	if err != nil {
		return nil, fmt.Errorf("proxy: --audit-spool-dir: %w", err)
	}
	max := p.cfg.AuditSpoolMaxBytes
	if max == 0 {
		max = DefaultAuditSpoolMaxBytes
	}
	sp, err := spool.Open(a.spoolDir, spool.Options{MaxBytes: max, Consumers: consumers, Writer: writer})
	if err != nil {
		return nil, fmt.Errorf("proxy: --audit-spool-dir: %w", err)
	}
	var runners []*export.Runner
	if a.toAgent {
		runners = append(runners, export.New(sp, agentConsumer, p.shipper, p.log))
	}
	for _, s := range a.sinks {
		sk, err := sink.Open(s)
		if err != nil {
			sp.Close()
			return nil, fmt.Errorf("proxy: --audit-export: %w", err)
		}
		runners = append(runners, export.New(sp, export.ConsumerName(s), sk, p.log))
		p.log.Info("audit exporter", "exporter", export.ConsumerName(s), "spec", sink.Redacted(s))
	}
	p.metrics.reg.MustRegister(export.Metrics(sp, runners...))
	if a.toAgent && len(a.sinks) == 0 && p.cfg.AuditFailureModeAllow {
		p.pauseWhileDiscarded(ctx, func(ctx context.Context) error { return p.shipper.ExportLines(ctx, nil) })
	}
	for _, r := range runners {
		wg.Add(1)
		go func() { defer wg.Done(); r.Run(ctx) }()
	}
	p.recorder.sp.Store(sp)
	p.log.Info("audit export on", "writer", writer, "spool", a.spoolDir, "spool_max_bytes", max, "exporters", len(runners))
	return sp.Close, nil
}

// agentShipper is the sink that sends spooled records to the agent over
// the Discovery stream and returns once the agent says the server has
// them (AuditAck); the runner commits the spool's cursor only then.
type agentShipper struct {
	mu     sync.Mutex
	stream *shipStream // nil while no Discovery stream is up
	// inFlight keeps one batch at a time on the stream, from send to ack:
	// the runner's batch and a paused sidecar's probe (pauseWhileDiscarded)
	// would otherwise take each other's ack off st.acks, and a late
	// "discarded" could undo a newer "kept".
	inFlight sync.Mutex
	next     atomic.Uint64
	// discarded, if set (before the stream starts), is told after every
	// acknowledged batch whether the server discarded it (it keeps no
	// audit stream): see pauseWhileDiscarded.
	discarded func(bool)
}

// shipStream is one Discovery stream as the shipper uses it.
type shipStream struct {
	send func(*proxyv1.DiscoveryRequest) error
	acks chan auditAck
	done <-chan struct{}
}

// auditAck is an AuditAck as the stream's reader passes it on.
type auditAck struct {
	id        uint64
	err       string
	discarded bool
}

// auditAckTimeout bounds the wait for an ack: a batch not answered by
// then is sent again (the server de-duplicates it).
const auditAckTimeout = 30 * time.Second

// attach makes st the stream batches go on until detach.
func (s *agentShipper) attach(st *shipStream) {
	s.mu.Lock()
	s.stream = st
	s.mu.Unlock()
}

func (s *agentShipper) detach(st *shipStream) {
	s.mu.Lock()
	if s.stream == st {
		s.stream = nil
	}
	s.mu.Unlock()
}

// ack passes an AuditAck from the stream to the waiting batch.
func (st *shipStream) ack(id uint64, errText string, discarded bool) {
	select {
	case st.acks <- auditAck{id: id, err: errText, discarded: discarded}:
	default: // nobody waits for it: a late ack of a batch given up on
	}
}

var errNoAgentStream = errors.New("proxy: no Discovery stream to the agent")

// ExportLines implements export.LineSink.
func (s *agentShipper) ExportLines(ctx context.Context, lines [][]byte) error {
	s.inFlight.Lock()
	defer s.inFlight.Unlock()
	s.mu.Lock()
	st := s.stream
	s.mu.Unlock()
	if st == nil {
		return errNoAgentStream
	}
	id := s.next.Add(1)
	batch := &proxyv1.DiscoveryRequest{Msg: &proxyv1.DiscoveryRequest_Audit{Audit: &proxyv1.AuditBatch{BatchId: id, Records: lines}}}
	if err := st.send(batch); err != nil {
		return fmt.Errorf("proxy: sending audit batch to the agent: %w", err)
	}
	t := time.NewTimer(auditAckTimeout)
	defer t.Stop()
	for {
		select {
		case a := <-st.acks:
			if a.id != id {
				continue
			}
			if a.err != "" {
				return fmt.Errorf("proxy: agent refused audit batch: %s", a.err)
			}
			if s.discarded != nil {
				s.discarded(a.discarded)
			}
			return nil
		case <-st.done:
			return errors.New("proxy: Discovery stream ended before the audit batch was acknowledged")
		case <-t.C:
			return fmt.Errorf("proxy: no acknowledgement of the audit batch in %s", auditAckTimeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Export implements sink.Sink (the runner uses ExportLines).
func (s *agentShipper) Export(ctx context.Context, recs []auditstream.Record) error {
	lines := make([][]byte, len(recs))
	for i := range recs {
		b, err := json.Marshal(&recs[i])
		if err != nil {
			return fmt.Errorf("proxy: %w", err)
		}
		lines[i] = b
	}
	return s.ExportLines(ctx, lines)
}

// Close implements sink.Sink.
func (s *agentShipper) Close() error { return nil }
