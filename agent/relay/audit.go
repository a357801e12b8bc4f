package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	proxyv1 "github.com/sigil-mesh/sigil/api/proxy/v1"
	"github.com/sigil-mesh/sigil/auditstream"
)

// Option sets one of a Relay's hooks at construction (see New).
type Option func(*Relay)

// AuditExporter passes a batch of audit records (JSON lines, package
// auditstream) to the server and returns once the server has them, or
// has discarded them (true) because it keeps no audit stream.
type AuditExporter func(ctx context.Context, records [][]byte) (discarded bool, err error)

// WithAuditExport has the sidecars' audit batches passed to f; without
// it, a batch is answered with an error (and the sidecar keeps it).
func WithAuditExport(f AuditExporter) Option {
	return func(r *Relay) { r.exportAudit = f }
}

// auditTimeout bounds one forwarded batch; the sidecar sends it again.
const auditTimeout = 20 * time.Second

// auditWriter is the part of a record the relay checks.
type auditWriter struct {
	Sigil struct {
		Writer string `json:"writer"`
	} `json:"sigil"`
}

// recordWriter returns the writer (sigil.writer) of the record line, as
// encoding/json decodes it into auditWriter: the last "sigil" key of the
// top level and its last "writer", keys matched case-insensitively, the
// line refused when it is not JSON or a field has another type.
//
// On the hot path (every decision of the node's sidecars): a line in its
// sealed form, every sidecar's, is read by auditstream.ParseSealed, which
// reads such a line as encoding/json does at a fraction of the cost
// (FuzzRecordWriter holds the two to each other); any other line is
// decoded as before.
func recordWriter(line []byte) (string, error) {
	if r, ok := auditstream.ParseSealed(line); ok {
		return r.Sigil.Writer, nil
	}
	var w auditWriter
	if err := json.Unmarshal(line, &w); err != nil {
		return "", err
	}
	return w.Sigil.Writer, nil
}

// forwardAudit passes one sidecar's batch to the server and returns the
// ack for the sidecar. Every record must be of the sidecar's own chain
// (its attested SPIFFE ID, "#", an instance): a sidecar cannot speak for
// another workload. The server checks the same against its entries.
func (r *Relay) forwardAudit(ctx context.Context, p *agentv1.Proxy, b *proxyv1.AuditBatch) *proxyv1.AuditAck {
	ack := &proxyv1.AuditAck{BatchId: b.GetBatchId()}
	if r.exportAudit == nil {
		ack.Error = "this agent does not export audit records"
		return ack
	}
	bound := ""
	for _, line := range b.GetRecords() {
		writer, err := recordWriter(line)
		if err != nil {
			ack.Error = fmt.Sprintf("audit record is not JSON: %v", err)
			return ack
		}
		if writer == bound && bound != "" {
			continue // checked and bound with an earlier record of this batch
		}
		if !strings.HasPrefix(writer, p.SpiffeId+"#") {
			ack.Error = fmt.Sprintf("audit record of writer %q: a sidecar attested as %s may only send its own (%s#INSTANCE)", writer, p.SpiffeId, p.SpiffeId)
			return ack
		}
		if other := r.bindWriter(writer, p.Id); other != "" {
			ack.Error = fmt.Sprintf("audit record of writer %q: that chain is sent by another sidecar of this node (%s); replicas of one identity keep one chain each", writer, other)
			return ack
		}
		bound = writer
	}
	ctx, cancel := context.WithTimeout(ctx, auditTimeout)
	defer cancel()
	discarded, err := r.exportAudit(ctx, b.GetRecords())
	ack.Discarded = discarded
	if err != nil {
		ack.Error = fmt.Sprintf("server: %v", err)
		r.log.Warn("audit batch not passed to the server; the sidecar sends it again", "proxy", p.Id, "records", len(b.GetRecords()), "error", err)
	}
	return ack
}

// bindWriter binds writer to the sidecar registered as proxy, the first
// time one of its records passes, and returns the other registered
// sidecar it is bound to, if any ("" when writer is proxy's). Replicas of
// one workload share a SPIFFE ID but not a chain: without the binding,
// one could send records under another's writer with seqs ahead of it,
// and the server would drop the real ones as re-sent. A binding ends when
// its sidecar deregisters (a restarted sidecar continues its chain).
func (r *Relay) bindWriter(writer, proxy string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if other, ok := r.writers[writer]; ok && other != proxy {
		if _, live := r.proxies[other]; live {
			return other
		}
	}
	r.writers[writer] = proxy
	return ""
}

// releaseWritersLocked ends proxy's writer bindings; r.mu is held.
func (r *Relay) releaseWritersLocked(proxy string) {
	for w, p := range r.writers {
		if p == proxy {
			delete(r.writers, w)
		}
	}
}
