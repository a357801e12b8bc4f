package relay

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	proxyv1 "github.com/sigil-mesh/sigil/api/proxy/v1"
)

// A sidecar's audit batch reaches the server only when every record is of
// the sidecar's own chain (its attested identity, "#", an instance); the
// ack carries the server's refusal, so the sidecar keeps the batch.
func TestAuditBatchOnlyOfTheSidecarsOwnChain(t *testing.T) {
	const id = "spiffe://example.org/ns/default/sa/api"
	rec := func(writer string) []byte { return []byte(`{"sigil":{"writer":"` + writer + `","seq":1}}`) }
	for _, tt := range []struct {
		name      string
		records   [][]byte
		serverErr error
		exporter  bool
		want      string // in the ack's error; "" for none
		forwarded bool
		discarded bool // the server keeps no stream: passed on in the ack
	}{
		{name: "own", records: [][]byte{rec(id + "#a1"), rec(id + "#a1")}, exporter: true, forwarded: true},
		{name: "another workload's", records: [][]byte{rec(id + "#a1"), rec("spiffe://example.org/ns/default/sa/web#b")}, exporter: true, want: "may only send its own"},
		{name: "a prefix of another ID", records: [][]byte{rec(id + "x#a1")}, exporter: true, want: "may only send its own"},
		{name: "not JSON", records: [][]byte{[]byte("{")}, exporter: true, want: "not JSON"},
		{name: "server refuses", records: [][]byte{rec(id + "#a1")}, exporter: true, serverErr: errors.New("spool full"), want: "server: spool full", forwarded: true},
		{name: "no exporter", records: [][]byte{rec(id + "#a1")}, want: "does not export"},
		{name: "server keeps no stream", records: [][]byte{rec(id + "#a1")}, exporter: true, discarded: true, forwarded: true},
		{name: "probe (no records)", exporter: true, discarded: true, forwarded: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			forwarded := false
			var opts []Option
			if tt.exporter {
				opts = append(opts, WithAuditExport(func(_ context.Context, recs [][]byte) (bool, error) {
					forwarded = true
					return tt.discarded, tt.serverErr
				}))
			}
			r := New(nil, nil, slog.New(slog.DiscardHandler), opts...)
			ack := r.forwardAudit(context.Background(), &agentv1.Proxy{Id: "p1", SpiffeId: id}, &proxyv1.AuditBatch{BatchId: 7, Records: tt.records})
			if ack.GetBatchId() != 7 || forwarded != tt.forwarded || (tt.want == "") != (ack.GetError() == "") || !strings.Contains(ack.GetError(), tt.want) || ack.GetDiscarded() != tt.discarded {
				t.Fatalf("ack %+v, forwarded %v; want error %q, forwarded %v", ack, forwarded, tt.want, tt.forwarded)
			}
		})
	}
}

// Two replicas of one workload (one SPIFFE ID) on a node keep a chain
// each: a replica sending records under the other's writer is refused,
// naming the sidecar that owns it, until that one deregisters.
func TestAuditWriterBoundToOneReplica(t *testing.T) {
	const id = "spiffe://example.org/ns/default/sa/api"
	rec := []byte(`{"sigil":{"writer":"` + id + `#a1","seq":1}}`)
	r := New(nil, nil, slog.New(slog.DiscardHandler), WithAuditExport(func(context.Context, [][]byte) (bool, error) { return false, nil }))
	p1, p2 := &agentv1.Proxy{Id: "p1", SpiffeId: id}, &agentv1.Proxy{Id: "p2", SpiffeId: id}
	r.proxies[p1.Id], r.proxies[p2.Id] = p1, p2
	send := func(p *agentv1.Proxy) string {
		return r.forwardAudit(context.Background(), p, &proxyv1.AuditBatch{BatchId: 1, Records: [][]byte{rec}}).GetError()
	}
	if e := send(p1); e != "" {
		t.Fatalf("owner refused: %s", e)
	}
	if e := send(p2); !strings.Contains(e, "another sidecar of this node (p1)") {
		t.Fatalf("other replica: %q, want refused naming p1", e)
	}
	if e := send(p1); e != "" {
		t.Fatalf("owner refused on its second batch: %s", e)
	}
	r.mu.Lock()
	delete(r.proxies, p1.Id)
	r.releaseWritersLocked(p1.Id)
	r.mu.Unlock()
	if e := send(p2); e != "" {
		t.Fatalf("after the owner deregistered: %s", e)
	}
}
