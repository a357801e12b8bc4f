package traffic

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// Sigil's own resource: an authorization policy (Rego modules) applied
// with `sigil apply` beside the traffic resources and streamed to the
// sidecars it selects (docs/policy-resource.md).
const (
	KindPolicy       = "Policy"
	GroupSigil       = "security.sigil.dev"
	PolicyAPIVersion = GroupSigil + "/v1"
	// RootNamespace is the default root namespace, which holds the
	// mesh-wide policies: one there applies to every sidecar that no
	// policy of the same mode in its own namespace selects (Istio's root
	// namespace, by default the control plane's, istio-system). On
	// Kubernetes the root is the server's --k8s-namespace, which the
	// server streams to sidecars (ConfigDelta.root_namespace).
	RootNamespace = "sigil-system"
)

// Policy modes (spec.mode): an enforce policy decides; a dryrun one is
// evaluated beside it and only recorded (policy.ModeEnforce/ModeDryRun).
const (
	PolicyModeEnforce = "enforce"
	PolicyModeDryRun  = "dryrun"
)

// Policy is a Policy resource.
type Policy struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   Metadata   `json:"metadata"`
	Spec       PolicySpec `json:"spec"`
}

// PolicySpec is a Policy's spec.
type PolicySpec struct {
	// Mode is enforce (also when absent) or dryrun.
	Mode string `json:"mode,omitempty"`
	// Selector narrows the policy to the workloads of its namespace with
	// these labels (Istio AuthorizationPolicy's selector); nil: all of them.
	Selector *WorkloadSelector `json:"selector,omitempty"`
	// Modules are the Rego modules by file name; names ending _test.rego
	// hold the policy's tests, run by the server before it accepts it.
	Modules map[string]string `json:"modules,omitempty"`
	// Bundle is an OPA bundle (.tar.gz, base64 in YAML and JSON) whose
	// .rego files are the modules, by their paths in it; the other of
	// Modules and Bundle must be absent.
	Bundle []byte `json:"bundle,omitempty"`

	// files are Modules, or Bundle's modules once validate read them.
	files map[string]string
}

// All returns the policy's modules, tests included: Modules, or the
// .rego files of Bundle (Validate read them; nil before).
func (s *PolicySpec) All() map[string]string {
	if s.Bundle != nil {
		return s.files
	}
	return s.Modules
}

// moduleName is a module's file name: a plain name ending .rego.
var moduleName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,250}\.rego$`)

// maxModules bounds a policy's modules (its size is bounded as every
// resource's, --max-resource-bytes).
const maxModules = 256

// policy checks a Policy's spec.
func (v *validator) policy(p *Policy) {
	switch p.Spec.Mode {
	case PolicyModeEnforce, PolicyModeDryRun:
	default:
		v.fail("spec.mode", "%q: want enforce or dryrun", p.Spec.Mode)
	}
	if p.Spec.Selector != nil {
		v.labels("spec.selector.matchLabels", p.Spec.Selector.MatchLabels)
	}
	field := "spec.modules"
	switch {
	case p.Spec.Bundle != nil && p.Spec.Modules != nil:
		v.fail("spec.bundle", "give spec.modules or spec.bundle, not both")
		return
	case p.Spec.Bundle != nil:
		field = "spec.bundle"
		files, err := readBundle(p.Spec.Bundle)
		if err != nil {
			v.fail(field, "%s", strings.TrimPrefix(err.Error(), "traffic: "))
			return
		}
		p.Spec.files = files
	}
	modules := p.Spec.All()
	if len(modules) > maxModules {
		v.fail(field, "%d modules: at most %d", len(modules), maxModules)
	}
	policies := 0
	for _, name := range PolicyModuleNames(modules) {
		if !validModulePath(name) {
			v.fail(field, "module name %q: want a file name ending .rego (letters, digits, '.', '_', '-')", name)
		}
		if !IsPolicyTest(name) {
			policies++
		}
	}
	if policies == 0 {
		v.fail(field, "no policy module: give at least one .rego module that is not a _test.rego")
	}
}

// validModulePath accepts a module's file name, or for a bundle's module
// its path of directory names and a file name (a/b/authz.rego).
func validModulePath(name string) bool {
	dirs := strings.Split(name, "/")
	for _, d := range dirs[:len(dirs)-1] {
		if !bundleDir.MatchString(d) {
			return false
		}
	}
	return moduleName.MatchString(dirs[len(dirs)-1])
}

var bundleDir = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,250}$`)

// IsPolicyTest reports whether a module of a Policy holds its tests.
func IsPolicyTest(name string) bool { return strings.HasSuffix(name, "_test.rego") }

// PolicyModuleNames returns the module names of modules, sorted.
func PolicyModuleNames(modules map[string]string) []string {
	names := make([]string, 0, len(modules))
	for n := range modules {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Enforced returns the modules the sidecar compiles (the _test.rego
// modules left out), as policy.Compile takes them.
func (s *PolicySpec) Enforced() map[string]string {
	all := s.All()
	out := make(map[string]string, len(all))
	for n, src := range all {
		if !IsPolicyTest(n) {
			out[n] = src
		}
	}
	return out
}

// Tests returns the _test.rego modules.
func (s *PolicySpec) Tests() map[string]string {
	out := map[string]string{}
	for n, src := range s.All() {
		if IsPolicyTest(n) {
			out[n] = src
		}
	}
	return out
}

// policyOverlaps reports whether two policies of one namespace and mode
// could both be the most specific for one workload: both without a
// selector, or both with selectors some workload matches together.
func policyOverlaps(a, b *Policy) bool {
	if (a.Spec.Selector == nil) != (b.Spec.Selector == nil) {
		return false // the one with a selector wins where it selects
	}
	if a.Spec.Selector == nil {
		return true
	}
	return a.Spec.Selector.overlaps(b.Spec.Selector)
}

// checkPolicyScopes refuses two policies that would apply to one
// workload in the same mode (policyOverlaps), naming both.
func checkPolicyScopes(all []Resource) []error {
	byScope := map[string][]Resource{}
	for _, r := range all {
		if r.Policy != nil {
			k := r.Namespace + "\x00" + r.Policy.Spec.Mode
			byScope[k] = append(byScope[k], r)
		}
	}
	var errs []error
	for _, rs := range byScope {
		sort.Slice(rs, func(i, j int) bool { return rs[i].Name < rs[j].Name })
		for i := range rs {
			for j := i + 1; j < len(rs); j++ {
				if policyOverlaps(rs[i].Policy, rs[j].Policy) {
					errs = append(errs, fmt.Errorf("traffic: %s and %s: both are %s policies of namespace %s that may select the same workloads; give them selectors that no workload matches together, or merge them",
						rs[i].Ref(), rs[j].Ref(), rs[i].Policy.Spec.Mode, rs[i].Namespace))
				}
			}
		}
	}
	return errs
}

// PolicyFor returns the Policy resource of mode that applies to a
// sidecar in namespace with labels, or nil: of its own namespace, one
// whose selector matches, else one without a selector; failing both, the
// same in root, the root namespace (mesh-wide; "" is RootNamespace).
// CheckReferences guarantees at most one candidate at each step.
func PolicyFor(all []Resource, mode, root, namespace string, labels map[string]string) *Resource {
	if root == "" {
		root = RootNamespace
	}
	for _, ns := range []string{namespace, root} {
		var general *Resource
		for i := range all {
			r := &all[i]
			if r.Policy == nil || r.Namespace != ns || r.Policy.Spec.Mode != mode {
				continue
			}
			if r.Policy.Spec.Selector == nil {
				general = r
			} else if r.Policy.Spec.Selector.Matches(labels) {
				return r
			}
		}
		if general != nil {
			return general
		}
	}
	return nil
}
