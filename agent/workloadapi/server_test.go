package workloadapi

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/agent/cache"
	"github.com/sigil-mesh/sigil/selector"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// pendingIDs is a cache whose one matching identity has no usable SVID.
type pendingIDs struct{ why error }

func (p pendingIDs) Match(selector.Set) ([]cache.Identity, bool) { return nil, true }
func (p pendingIDs) Unavailable(selector.Set) error              { return p.why }
func (p pendingIDs) Changed() <-chan struct{}                    { return nil }
func (p pendingIDs) Bundle() *spiffebundle.Bundle                { return nil }
func (p pendingIDs) FetchJWTSVIDs(context.Context, selector.Set, spiffeid.ID, []string) ([]cache.JWTSVID, error) {
	return nil, p.why
}

func TestAgentRecoversAfterLongOutageFetchFailsFast(t *testing.T) {
	tests := []struct {
		name     string
		why      error
		first    bool
		wantCode codes.Code
		maxTime  time.Duration
	}{
		{"expired and unrenewable: Unavailable at once", errors.New("agent svid expired; the node must re-attest"), true, codes.Unavailable, 100 * time.Millisecond},
		{"first SVID being signed: bounded wait", nil, true, codes.Unavailable, time.Second},
		{"open stream: waits quietly for the next SVID", errors.New("expired"), false, codes.DeadlineExceeded, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := New(pendingIDs{why: tt.why}, nil, slog.New(slog.DiscardHandler))
			h.firstSVIDWait = 300 * time.Millisecond
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := h.waitMatch(ctx, selector.NewSet(), tt.first, true)
			if took := time.Since(start); took > tt.maxTime {
				t.Fatalf("took %s", took)
			}
			if status.Code(err) != tt.wantCode {
				t.Fatalf("error %v, want %s", err, tt.wantCode)
			}
			if tt.why != nil && tt.first && status.Convert(err).Message() != tt.why.Error() {
				t.Fatalf("message %q does not give the reason %q", status.Convert(err).Message(), tt.why)
			}
			if tt.why != nil && tt.first {
				// Bundles are the caller's with an entry, SVID or not.
				if _, err := h.waitMatch(ctx, selector.NewSet(), true, false); err != nil {
					t.Fatalf("bundles refused: %v", err)
				}
			}
		})
	}
}
