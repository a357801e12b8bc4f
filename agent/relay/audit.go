package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	proxyv1 "github.com/sigil-mesh/sigil/api/proxy/v1"
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
	for _, line := range b.GetRecords() {
		var w auditWriter
		if err := json.Unmarshal(line, &w); err != nil {
			ack.Error = fmt.Sprintf("audit record is not JSON: %v", err)
			return ack
		}
		if !strings.HasPrefix(w.Sigil.Writer, p.SpiffeId+"#") {
			ack.Error = fmt.Sprintf("audit record of writer %q: a sidecar attested as %s may only send its own (%s#INSTANCE)", w.Sigil.Writer, p.SpiffeId, p.SpiffeId)
			return ack
		}
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
