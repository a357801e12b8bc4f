package proxy

import (
	"strings"
	"testing"
	"time"
)

// Envoy's retry back-off: 25ms doubling, never above 250ms, jittered
// within the upper half.
func TestIstioRouteSemanticsRetryBackoff(t *testing.T) {
	tests := []struct {
		attempt  int
		min, max time.Duration
	}{
		{0, 12 * time.Millisecond, 25 * time.Millisecond},
		{1, 25 * time.Millisecond, 50 * time.Millisecond},
		{3, 100 * time.Millisecond, 200 * time.Millisecond},
		{4, 125 * time.Millisecond, 250 * time.Millisecond},
		{9, 125 * time.Millisecond, 250 * time.Millisecond},
		{63, 125 * time.Millisecond, 250 * time.Millisecond},
	}
	for _, tt := range tests {
		for range 200 {
			if d := retryBackoff(tt.attempt); d < tt.min || d > tt.max {
				t.Fatalf("attempt %d: %s, want %s to %s", tt.attempt, d, tt.min, tt.max)
			}
		}
	}
}

// --label takes Kubernetes labels only: the agent would refuse the
// registration anyway, so the sidecar says so at start.
func TestResourceNameValidationLabelFlag(t *testing.T) {
	for _, l := range []string{"version=\x1b]0;x\a", "a b=c", "version=-v1"} {
		_, err := Config{Service: "api", Labels: []string{l}}.Validate()
		if err == nil || !strings.Contains(err.Error(), "--label: traffic: label") {
			t.Errorf("--label %q: %v", l, err)
		}
	}
}
