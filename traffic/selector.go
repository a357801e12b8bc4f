package traffic

import (
	"fmt"
	"sort"

	"github.com/sigil-mesh/sigil/naming"
)

// WorkloadSelector is Istio's WorkloadSelector (type.v1beta1): the
// workloads a DestinationRule applies to, by their labels. A workload
// matches when it carries every matchLabels entry; empty matchLabels
// match every workload of the namespace, as a Kubernetes selector does.
// A sidecar's labels are its --label flags.
type WorkloadSelector struct {
	MatchLabels map[string]string `json:"matchLabels,omitempty"`
}

// Matches reports whether a workload with labels is one s selects (a nil
// selector selects every workload).
func (s *WorkloadSelector) Matches(labels map[string]string) bool {
	if s == nil {
		return true
	}
	for k, want := range s.MatchLabels {
		if got, ok := labels[k]; !ok || got != want {
			return false
		}
	}
	return true
}

// overlaps reports whether some workload could match both a and b (two
// non-nil selectors): they give no key two different values.
func (s *WorkloadSelector) overlaps(o *WorkloadSelector) bool {
	for k, v := range s.MatchLabels {
		if w, ok := o.MatchLabels[k]; ok && w != v {
			return false
		}
	}
	return true
}

// labels checks a label map at p (matchLabels, a subset's labels,
// sourceLabels) as Kubernetes and Istio do: each key and value by
// naming.ValidateLabel.
func (v *validator) labels(p string, m map[string]string) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := naming.ValidateLabel(k, m[k]); err != nil {
			v.fail(fmt.Sprintf("%s[%s]", p, naming.Quote(k)), "%v", err)
		}
	}
}

// workloadSelector checks a DestinationRule's workloadSelector: its labels,
// and, since the selector picks workloads of the rule's own namespace only
// (Istio: "workload selectors do not apply across namespace boundaries"),
// an exportTo that names only that namespace (absent, "." or its name).
func (v *validator) workloadSelector(dr *DestinationRule, namespace string) {
	s := dr.Spec.WorkloadSelector
	if s == nil {
		return
	}
	v.labels("spec.workloadSelector.matchLabels", s.MatchLabels)
	for i, ns := range dr.Spec.ExportTo {
		if ns != "." && ns != namespace {
			v.fail(fmt.Sprintf("spec.exportTo[%d]", i), "%q with a workloadSelector: the selector picks workloads of the rule's own namespace only (use \".\" or drop exportTo)", ns)
		}
	}
}

// Selects reports whether r applies to a sidecar in namespace whose
// workload carries labels: r is Visible there and, for a DestinationRule
// with a workloadSelector, the sidecar is in the rule's own namespace
// and its labels match (Istio's rule).
func (r Resource) Selects(namespace string, labels map[string]string) bool {
	if !r.Visible(namespace) {
		return false
	}
	if r.DR == nil || r.DR.Spec.WorkloadSelector == nil {
		return true
	}
	return r.Namespace == namespace && r.DR.Spec.WorkloadSelector.Matches(labels)
}

// SelectedFor returns the resources of all that apply to a sidecar in
// namespace with labels (Selects), in order, with delegating routes
// replaced by their delegates' (withDelegates): what its table compiles.
// Where a host has a DestinationRule with a workloadSelector that selects
// the sidecar and one without, Compile keeps the selecting one.
func SelectedFor(all []Resource, namespace string, labels map[string]string) []Resource {
	// Delegation is resolved over every namespace first: a root's
	// exportTo, not its delegate's, says which sidecars get the result.
	all = withDelegates(all)
	out := make([]Resource, 0, len(all))
	for _, r := range all {
		if r.Selects(namespace, labels) {
			out = append(out, r)
		}
	}
	return out
}

// hasSelector reports whether r is a DestinationRule with a
// workloadSelector.
func (r Resource) hasSelector() bool { return r.DR != nil && r.DR.Spec.WorkloadSelector != nil }
