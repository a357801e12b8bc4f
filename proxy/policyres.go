package proxy

import (
	"context"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sigil-mesh/sigil/policy"
	"github.com/sigil-mesh/sigil/traffic"
)

// Policy resources reach the sidecar with the traffic configuration
// (docs/policy-resource.md). The sidecar picks, per mode, the one that
// applies to it (traffic.PolicyFor: its namespace and --label values),
// compiles it and swaps it in; one that does not compile is refused and
// the last good one stays. With --policy, the local files are the
// enforced policy and an enforce resource is shown as not in force; a
// dryrun resource runs either way.

// policyStatus is what /config shows of the Policy resource of one mode.
type policyStatus struct {
	Resource string `json:"resource"`
	Revision string `json:"revision"`
	InForce  bool   `json:"in_force"`
	// Why is the reason a resource is not in force: refused (it did not
	// compile here) or overridden (--policy).
	Why string `json:"why,omitempty"`
}

// policyResources holds the Policy resources' state for /config.
type policyResources struct {
	mu     sync.Mutex
	byMode map[string]policyStatus
}

func (s *policyResources) set(mode string, st *policyStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byMode == nil {
		s.byMode = map[string]policyStatus{}
	}
	if st == nil {
		delete(s.byMode, mode)
		return
	}
	s.byMode[mode] = *st
}

func (s *policyResources) get(mode string) (policyStatus, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.byMode[mode]
	return st, ok
}

func (s *policyResources) snapshot() map[string]policyStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]policyStatus, len(s.byMode))
	for k, v := range s.byMode {
		out[k] = v
	}
	return out
}

// ResourceRevision is the revision of a Policy resource, in every
// decision it makes: "<namespace>/<name>@<first 12 hex digits of the
// SHA-256 of its modules>" (policy.Digest of the enforced modules).
func ResourceRevision(r *traffic.Resource) string {
	return r.Namespace + "/" + r.Name + "@" + policy.Digest(r.Policy.Spec.Enforced())[:12]
}

// applyPolicies puts in force, per mode, the Policy resource of all that
// applies to this sidecar, root being the namespace of mesh-wide ones
// (the server's, ConfigDelta.root_namespace); none takes a resource's
// policy out of force (an enforcing engine fed by resources then denies
// everything).
func (p *Proxy) applyPolicies(ctx context.Context, all []traffic.Resource, root string) {
	for _, mode := range []string{traffic.PolicyModeEnforce, traffic.PolicyModeDryRun} {
		eng := p.policy
		if mode == traffic.PolicyModeDryRun {
			eng = p.dryRun
		}
		if eng == nil {
			continue // a Proxy built without engines (tests of routing alone)
		}
		r := traffic.PolicyFor(all, mode, root, p.names.Namespace(), p.cfg.labels)
		if r == nil {
			if mode == traffic.PolicyModeDryRun || p.cfg.Policy == "" {
				eng.Clear()
			}
			p.policyRes.set(mode, nil)
			continue
		}
		st := &policyStatus{Resource: r.Ref(), Revision: ResourceRevision(r)}
		if prev, ok := p.policyRes.get(mode); ok && prev.Resource == st.Resource && prev.Revision == st.Revision {
			// Unchanged since the last configuration (in force, refused or
			// overridden): nothing to compile again, or to log again.
			continue
		}
		if mode == traffic.PolicyModeEnforce && p.cfg.Policy != "" {
			st.Why = "overridden: --policy " + p.cfg.Policy + " is the enforced policy"
			p.log.Warn("policy resource not in force: the --policy files are enforced", "resource", st.Resource, "revision", st.Revision, "path", p.cfg.Policy)
			p.policyRes.set(mode, st)
			continue
		}
		if err := eng.Load(ctx, policy.Source{Modules: r.Policy.Spec.Enforced(), Revision: st.Revision}); err != nil {
			st.Why = "refused: " + err.Error()
			p.log.Error("policy resource refused; the policy in force stays", "resource", st.Resource, "revision", st.Revision, "mode", mode, "in_force", eng.Revision(), "error", err)
		} else {
			st.InForce = true
		}
		p.policyRes.set(mode, st)
	}
}

// decideDryRun asks the dry-run policy, when one is in force, about in
// (the enforced decision is made already and stands whatever this says):
// it is logged and counted in sigil_policy_dryrun_decisions_total. It
// reports whether the dry-run policy would have denied (an error
// included, as enforcing would deny): the golden metrics count that as
// dryrun_denied for `sigil stat`.
func (p *Proxy) decideDryRun(ctx context.Context, in *policy.Input) bool {
	if p.dryRun == nil || !p.dryRun.Loaded() {
		return false
	}
	d := p.dryRun.Decide(ctx, in)
	switch {
	case d.Err != nil:
		p.metrics.dryRun.WithLabelValues("error").Inc()
	case d.Allow:
		p.metrics.dryRun.WithLabelValues("allow").Inc()
		return false
	default:
		p.metrics.dryRun.WithLabelValues("deny").Inc()
	}
	return true
}

// dryRunCounter is sigil_policy_dryrun_decisions_total.
func dryRunCounter() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sigil_policy_dryrun_decisions_total",
		Help: "Decisions of the dry-run Policy resource, by result (allow, deny, error); they never block a request (Istio's shadow rules, envoy's rbac shadow_allowed/shadow_denied)."}, []string{"result"})
}
