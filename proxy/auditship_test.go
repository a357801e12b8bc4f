package proxy

import (
	"context"
	"sync"
	"testing"
	"time"

	proxyv1 "github.com/sigil-mesh/sigil/api/proxy/v1"
)

// TestAuditShipperConcurrentBatchesEachGetTheirAck: the runner's batch and
// a paused sidecar's probe share one Discovery stream; each must get its
// own ack, in the order the agent answers, instead of one taking the
// other's ack off the stream (it then waited auditAckTimeout, 30 s) or a
// late "discarded" ack of one undoing the "kept" answer of the other.
func TestAuditShipperConcurrentBatchesEachGetTheirAck(t *testing.T) {
	for range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		s := &agentShipper{}
		st := &shipStream{acks: make(chan auditAck, 1), done: ctx.Done()}
		// The agent answers each batch once both sides have sent (or,
		// where the shipper sends one batch at a time, after a moment).
		var mu sync.Mutex
		var sent []uint64
		both := make(chan struct{})
		st.send = func(m *proxyv1.DiscoveryRequest) error {
			mu.Lock()
			sent = append(sent, m.GetAudit().GetBatchId())
			if len(sent) == 2 {
				close(both)
			}
			mu.Unlock()
			id := m.GetAudit().GetBatchId()
			go func() {
				select {
				case <-both:
				case <-time.After(50 * time.Millisecond):
				}
				st.ack(id, "", false)
			}()
			return nil
		}
		s.attach(st)
		errs := make(chan error, 2)
		for range 2 {
			go func() { errs <- s.ExportLines(ctx, nil) }()
		}
		for range 2 {
			if err := <-errs; err != nil {
				cancel()
				t.Fatalf("a batch did not get its ack: %v", err)
			}
		}
		cancel()
	}
}
