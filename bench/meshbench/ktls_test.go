package main

import (
	"strings"
	"syscall"
	"testing"
)

func TestKTLSVerdict(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{nil, "available"},
		{syscall.ENOENT, "unavailable: no tls upper-layer protocol"},
		{syscall.ENOPROTOOPT, "unavailable: the kernel has no TCP_ULP"},
		{syscall.EEXIST, "available"},
		{syscall.EPERM, "unavailable: setsockopt"},
	}
	for _, tt := range tests {
		if got := ktlsVerdict(tt.err); !strings.HasPrefix(got, tt.want) {
			t.Errorf("ktlsVerdict(%v) = %q, want prefix %q", tt.err, got, tt.want)
		}
	}
}

// TestKTLSProbeAnswers runs the probe on this machine: it must reach the
// setsockopt and come back with a verdict, not fail before it.
func TestKTLSProbeAnswers(t *testing.T) {
	got := ktlsProbe()
	if !strings.HasPrefix(got, "available") && !strings.HasPrefix(got, "unavailable") {
		t.Fatalf("ktlsProbe() = %q", got)
	}
	t.Log(got)
}
