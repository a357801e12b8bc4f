package proxy

import (
	"context"
	"log/slog"
	"testing"

	proxyv1 "github.com/sigil-mesh/sigil/api/proxy/v1"
	"github.com/sigil-mesh/sigil/auditstream/spool"
	"github.com/sigil-mesh/sigil/policy"
)

// TestAuditRecordingPausedWhileServerKeepsNoStream: an ack saying the
// server discarded the batch (it runs without --audit-export) stops the
// recorder, so decisions cost no record; an ack saying it keeps the
// stream resumes it. The chain has no hole across the pause.
func TestAuditRecordingPausedWhileServerKeepsNoStream(t *testing.T) {
	mask, err := policy.ParseMask(policy.DefaultMask)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := spool.Open(t.TempDir(), spool.Options{MaxBytes: 1 << 20, Consumers: []string{agentConsumer}, Writer: "spiffe://example.org/ns/default/sa/api#00000001"})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	p := &Proxy{log: slog.New(slog.DiscardHandler), shipper: &agentShipper{}, recorder: newAuditRecorder(mask, nil)}
	p.recorder.sp.Store(sp)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p.pauseWhileDiscarded(ctx, func(context.Context) error { return nil })

	// A stream whose agent answers every batch with discarded as set.
	discarded := true
	st := &shipStream{acks: make(chan auditAck, 1), done: ctx.Done()}
	st.send = func(m *proxyv1.DiscoveryRequest) error {
		st.ack(m.GetAudit().GetBatchId(), "", discarded)
		return nil
	}
	p.shipper.attach(st)

	decide := func() {
		in := &policy.Input{Source: policy.PeerFromID("spiffe://example.org/ns/default/sa/web"), Request: policy.Request{Method: "GET", Path: "/", Protocol: policy.ProtocolHTTP}}
		if err := p.recorder.Record(in, policy.Decision{ID: "d", Allow: true, Mode: policy.ModeEnforce}); err != nil {
			t.Fatal(err)
		}
	}
	seq := func() int64 { s, _ := sp.Head("spiffe://example.org/ns/default/sa/api#00000001"); return s }

	decide()
	if seq() != 1 {
		t.Fatalf("seq %d after the first decision, want 1", seq())
	}
	if err := p.shipper.ExportLines(ctx, [][]byte{[]byte("{}")}); err != nil {
		t.Fatal(err)
	}
	decide()
	decide()
	if seq() != 1 {
		t.Fatalf("seq %d: decisions recorded while the server keeps no stream", seq())
	}
	discarded = false
	if err := p.shipper.ExportLines(ctx, nil); err != nil { // the probe
		t.Fatal(err)
	}
	decide()
	if seq() != 2 {
		t.Fatalf("seq %d after resuming, want 2 (no hole)", seq())
	}
}
