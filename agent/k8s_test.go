package agent

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestKubernetesAgentIDIsTheNodes: with --kubernetes the agent takes only
// the k8s_psat ID of its own --node-name; without, any agent ID.
func TestKubernetesAgentIDIsTheNodes(t *testing.T) {
	kube := &KubeConfig{Enabled: true, NodeName: "node-a"}
	tests := []struct {
		name string
		cfg  *KubeConfig
		id   string
		want string // "" accepted, else part of the error
	}{
		{"own node", kube, "spiffe://example.org/sigil/agent/k8s_psat/prod/node-a", ""},
		{"another node", kube, "spiffe://example.org/sigil/agent/k8s_psat/prod/node-b", `attested this agent as node "node-b"`},
		{"join-token agent", kube, "spiffe://example.org/sigil/agent/join_token/node-a", "not a k8s_psat agent ID"},
		{"plain host", &KubeConfig{}, "spiffe://example.org/sigil/agent/join_token/node-a", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.checkOwnID(spiffeid.RequireFromString(tt.id))
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("checkOwnID(%s) = %v, want %q", tt.id, err, tt.want)
			}
		})
	}
}
