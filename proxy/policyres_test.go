package proxy

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/policy"
	"github.com/sigil-mesh/sigil/telemetry"
	"github.com/sigil-mesh/sigil/traffic"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func policyResource(t *testing.T, name, mode, rego string) *agentv1.Resource {
	t.Helper()
	spec, err := json.Marshal(traffic.PolicySpec{Mode: mode, Modules: map[string]string{"authz.rego": rego}})
	if err != nil {
		t.Fatal(err)
	}
	return &agentv1.Resource{Kind: traffic.KindPolicy, Namespace: "default", Name: name, Spec: spec}
}

// policyTestProxy is a sidecar of default/api with its two engines, and
// --policy path when path is not "".
func policyTestProxy(t *testing.T, path string) (*Proxy, *outbound) {
	t.Helper()
	names, err := meshNames(spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/api"), "", DefaultClusterDomain)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	p := &Proxy{cfg: &checked{Config: Config{Policy: path}}, log: log, names: names, metrics: newMetrics(func() float64 { return 0 }, telemetry.NewRecorder(time.Now()))}
	ctx := context.Background()
	p.policy, err = policy.New(ctx, path, log)
	if err != nil {
		t.Fatal(err)
	}
	p.dryRun, _ = policy.New(ctx, "", log, policy.WithMode(policy.ModeDryRun))
	o := testOutbound(p)
	o.setState(traffic.Compile(0, nil), 0, 0, nil)
	return p, o
}

const (
	allowGetRego = "package sigil.authz\n\nallow if input.request.method == \"GET\"\n"
	allowAllRego = "package sigil.authz\n\nallow := true\n"
	// noAllowRego passes the server's shape checks but not the sidecar's
	// compile (no allow rule): the sidecar must keep the last good one.
	noAllowRego = "package sigil.authz\n\ndeny := true\n"
)

// The sidecar puts the Policy resources that apply to it in force per
// mode, keeps the last good policy when a new one does not compile here,
// denies when the enforced resource goes, and with --policy keeps the
// local files enforced and says the resource is not in force.
func TestPolicyResourceSidecarKeepsLastGood(t *testing.T) {
	p, o := policyTestProxy(t, "")
	get := func(e *policy.Engine) policy.Decision {
		return e.Decide(context.Background(), &policy.Input{Request: policy.Request{Method: "GET", Protocol: policy.ProtocolHTTP}})
	}
	good := policyResource(t, "authz", traffic.PolicyModeEnforce, allowGetRego)
	dry := policyResource(t, "watch", traffic.PolicyModeDryRun, allowAllRego)
	if v := p.applyConfig(o, &agentv1.Config{Version: 2, Resources: []*agentv1.Resource{good, dry}}); v != 2 {
		t.Fatalf("version %d: refused", v)
	}
	rev := "default/authz@" + policy.Digest(map[string]string{"authz.rego": allowGetRego})[:12]
	if d := get(p.policy); !d.Allow || d.Revision != rev || d.Mode != policy.ModeEnforce {
		t.Fatalf("enforced decision %+v, want allow by %s", d, rev)
	}
	if d := get(p.dryRun); !d.Allow || d.Mode != policy.ModeDryRun || !strings.HasPrefix(d.Revision, "default/watch@") {
		t.Fatalf("dry-run decision %+v", d)
	}

	// A policy that does not compile here: the last good one stays.
	bad := policyResource(t, "authz", traffic.PolicyModeEnforce, noAllowRego)
	p.applyConfig(o, &agentv1.Config{Version: 3, Resources: []*agentv1.Resource{bad, dry}})
	if d := get(p.policy); !d.Allow || d.Revision != rev {
		t.Fatalf("after a policy that does not compile: %+v, want the last good (%s)", d, rev)
	}
	st := p.policyRes.snapshot()[traffic.PolicyModeEnforce]
	if st.InForce || !strings.HasPrefix(st.Why, "refused: ") {
		t.Fatalf("/config status %+v: want refused", st)
	}

	// The resources go: deny (fail closed), and no dry run.
	p.applyConfig(o, &agentv1.Config{Version: 4})
	if d := get(p.policy); d.Allow || d.Err == nil {
		t.Fatalf("with no policy: %+v, want a denial with an error", d)
	}
	if p.dryRun.Loaded() {
		t.Fatal("the dry-run policy stayed after its resource went")
	}

	// --policy: the local files are enforced, the resource is not.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "authz.rego"), []byte(allowAllRego), 0o644); err != nil {
		t.Fatal(err)
	}
	p, o = policyTestProxy(t, dir)
	local := p.policy.Revision()
	p.applyConfig(o, &agentv1.Config{Version: 2, Resources: []*agentv1.Resource{good}})
	if p.policy.Revision() != local {
		t.Fatalf("with --policy, revision %s, want the local files' %s", p.policy.Revision(), local)
	}
	if st := p.policyRes.snapshot()[traffic.PolicyModeEnforce]; st.InForce || !strings.HasPrefix(st.Why, "overridden") {
		t.Fatalf("/config status with --policy %+v: want overridden", st)
	}
}

// TestPolicyRootNamespaceFromServer: the mesh-wide Policy is the one in
// the root namespace the server streams (its --k8s-namespace), not in a
// namespace fixed in the sidecar; a config without one (an older server)
// keeps sigil-system.
func TestPolicyRootNamespaceFromServer(t *testing.T) {
	inNS := func(r *agentv1.Resource, ns string) *agentv1.Resource { r.Namespace = ns; return r }
	tests := []struct {
		name, root string
		want       string // the enforced resource, "" for none
	}{
		{"server's root", "mesh", "Policy mesh/authz"},
		{"older server", "", "Policy " + traffic.RootNamespace + "/authz"},
		{"root elsewhere", "other", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, o := policyTestProxy(t, "")
			cfg := &agentv1.Config{Version: 2, RootNamespace: tt.root, Resources: []*agentv1.Resource{
				inNS(policyResource(t, "authz", traffic.PolicyModeEnforce, allowGetRego), "mesh"),
				inNS(policyResource(t, "authz", traffic.PolicyModeEnforce, allowAllRego), traffic.RootNamespace),
			}}
			if v := p.applyConfig(o, cfg); v != 2 {
				t.Fatalf("version %d: refused", v)
			}
			got := p.policyRes.snapshot()[traffic.PolicyModeEnforce].Resource
			if got != tt.want {
				t.Errorf("enforced resource %q, want %q", got, tt.want)
			}
		})
	}
}
