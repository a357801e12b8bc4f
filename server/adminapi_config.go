package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/audit"
	"github.com/sigil-mesh/sigil/server/registry"
	"github.com/sigil-mesh/sigil/traffic"
)

// Limits on configuration, checked at apply time so that nothing is
// accepted that cannot be delivered (see docs/limits.md, "Configuration
// size").
const (
	// DefaultMaxResourceBytes bounds one resource's encoded size, as
	// Kubernetes bounds an object (etcd's 1.5 MiB request limit).
	DefaultMaxResourceBytes = 1 << 20
	// MaxResourceBytesCeiling is the most --max-resource-bytes may be: a
	// resource travels whole in one delta, beside up to
	// configdelta.MaxMessageBytes of others, under gRPC's 4 MiB.
	MaxResourceBytesCeiling = 2 << 20
	// DefaultMaxConfigBytes bounds the whole configuration, which every
	// sidecar holds in memory and compiles.
	DefaultMaxConfigBytes = 64 << 20
	// maxApplyBody bounds an apply request (its YAML files); larger sets
	// are applied in several calls.
	maxApplyBody = 32 << 20
)

func specDigest(spec []byte) string {
	sum := sha256.Sum256(spec)
	return hex.EncodeToString(sum[:])
}

// applyConfig is POST /v1/config, sigil apply: it parses the request's
// files and hands them to applyResources.
func (s *Server) applyConfig(r *http.Request) (any, error) {
	var req adminv1.ApplyRequest
	if err := decodeStrict(r.Body, &req); err != nil {
		return nil, err
	}
	if len(req.Files) == 0 {
		return nil, adminv1.Errorf(http.StatusBadRequest, "no files")
	}
	var parsed []traffic.Resource
	var errs []error
	for _, f := range req.Files {
		rs, err := parseConfig([]byte(f.Content), f.Name)
		if err != nil {
			errs = append(errs, err)
		}
		parsed = append(parsed, rs...)
	}
	return s.applyResources(r.Context(), configWrite{parsed: parsed, parseErrs: errs, dryRun: req.DryRun, actor: actorAdmin})
}

// Audit actors of configuration writes.
const (
	actorAdmin      = "admin"      // the admin API: sigil apply and delete
	actorKubernetes = "kubernetes" // the CRD watcher (k8s_config.go)
)

// configWrite is one apply through applyResources.
type configWrite struct {
	parsed    []traffic.Resource
	parseErrs []error // reported with the other checks' errors
	dryRun    bool
	actor     string // the audit records' actor
	// origin is what the stored resources' Origin becomes: "" for the
	// admin API, or the Kubernetes object they mirror. A resource of
	// another origin is never replaced (a Conflict).
	origin string
	// origins, when set, is the origin of each resource of parsed, in
	// place of origin: a batch of Kubernetes objects (kubeConfigStore's
	// ApplyAll) in one write.
	origins []string
}

// originOf is the origin of parsed[i].
func (w configWrite) originOf(i int) string {
	if w.origins != nil {
		return w.origins[i]
	}
	return w.origin
}

// Reasons an apply is refused, named as Kubernetes conditions name them
// (the Accepted condition's reason on a refused object).
const (
	// ReasonInvalid: the resource itself is wrong (parse, validation,
	// policy checks, size).
	ReasonInvalid = "Invalid"
	// ReasonConflict: the resource clashes with others in force (a
	// DestinationRule for the same host, policies selecting the same
	// workloads, a resource of the same name from elsewhere).
	ReasonConflict = "Conflict"
)

// configRefusal is an apply refused: an APIError for the admin API (its
// status and message are what sigil apply prints) with the reason
// Kubernetes conditions carry.
type configRefusal struct {
	*adminv1.APIError
	Reason string
}

func (e *configRefusal) Unwrap() error { return e.APIError }

func refuse(status int, reason string, format string, args ...any) *configRefusal {
	return &configRefusal{APIError: adminv1.Errorf(status, format, args...), Reason: reason}
}

// applyResources is the one path every configuration write takes, from
// the admin API (sigil apply) and from Kubernetes (k8s_config.go): it
// validates every resource, then stores those that changed in one
// transaction. One bad resource refuses the whole write and the config
// in force stays. Sizes and references are checked against the in-memory
// index (configindex.go), so an apply costs the resources it carries
// plus one pass over the parsed config for references, not a read and
// parse of every stored resource. The order: parse errors, policy checks
// (compile, sigil policy check, tests), duplicates and size limits,
// origins, the total size, traffic.CheckReferences; then the audited
// store write and the agents' notification.
func (s *Server) applyResources(ctx context.Context, w configWrite) (adminv1.ApplyResponse, error) {
	parsed, errs := w.parsed, w.parseErrs
	if len(errs) == 0 {
		errs = checkPolicies(ctx, s.policiesToCheck(ctx, parsed))
	}
	seen := map[string]string{}
	for _, r := range parsed {
		if prev, dup := seen[r.Key()]; dup {
			errs = append(errs, fmt.Errorf("%s is given twice (%s)", r.Ref(), prev))
		}
		seen[r.Key()] = r.Ref()
	}
	items := make([]indexed, len(parsed))
	for i, p := range parsed {
		spec, err := p.Spec()
		if err != nil {
			return adminv1.ApplyResponse{}, err
		}
		items[i] = newIndexed(registry.StoredResource{Kind: p.Kind, Namespace: p.Namespace, Name: p.Name, Spec: spec, Origin: w.originOf(i)}, p)
		if items[i].size > s.cfg.MaxResourceBytes {
			errs = append(errs, fmt.Errorf("%s: encoded size %d bytes exceeds the per-resource limit of %d bytes (--max-resource-bytes); split it into smaller resources",
				p.Ref(), items[i].size, s.cfg.MaxResourceBytes))
		}
	}
	if len(errs) > 0 {
		return adminv1.ApplyResponse{}, refuse(http.StatusBadRequest, ReasonInvalid, "%v", errors.Join(errs...))
	}

	x, unlock, err := s.lockConfig(ctx)
	if err != nil {
		return adminv1.ApplyResponse{}, err
	}
	defer unlock()
	if err := checkOrigins(x, parsed, w.originOf); err != nil {
		return adminv1.ApplyResponse{}, err
	}
	resp := adminv1.ApplyResponse{DryRun: w.dryRun, Version: x.version}
	overlay := map[string]*traffic.Resource{}
	changes := map[string]*indexed{}
	var toStore []registry.StoredResource
	var events []audit.Event
	total := x.bytes
	for i, p := range parsed {
		key := p.Key()
		old, exists := x.items[key]
		action := adminv1.Created
		if exists {
			action = adminv1.Configured
			if bytes.Equal(old.stored.Spec, items[i].stored.Spec) {
				action = adminv1.Unchanged
			}
		}
		out := adminv1.ApplyResult{Result: adminv1.Result{Kind: p.Kind, Namespace: p.Namespace, Name: p.Name, Action: action}}
		if w.dryRun && action == adminv1.Configured {
			out.Diff = lineDiff(prettyJSON(old.stored.Spec), prettyJSON(items[i].stored.Spec))
		}
		resp.Results = append(resp.Results, out)
		if action == adminv1.Unchanged {
			continue
		}
		overlay[key], changes[key] = &parsed[i], &items[i]
		total += items[i].size - old.size
		toStore = append(toStore, items[i].stored)
		events = append(events, audit.Event{Type: auditConfigApplied, Actor: w.actor, Subject: p.Ref(),
			Details: map[string]string{"action": action, "spec_sha256": specDigest(items[i].stored.Spec)}})
	}
	if total > s.cfg.MaxConfigBytes {
		return adminv1.ApplyResponse{}, refuse(http.StatusBadRequest, ReasonInvalid, "the configuration would be %d bytes encoded; the total limit is %d bytes (--max-config-bytes)", total, s.cfg.MaxConfigBytes)
	}
	all := x.parsedWith(overlay)
	if len(overlay) > 0 {
		if err := traffic.CheckReferences(all); err != nil {
			return adminv1.ApplyResponse{}, refuse(http.StatusBadRequest, ReasonConflict, "%v", err)
		}
	}
	resp.Warnings = append(subsetWarnings(all, parsed), routeWarnings(all, parsed)...)
	// And a host of two labels, name.namespace, of the resources applied:
	// Sigil reads it as Istio does, outside the mesh, where Kubernetes DNS
	// (and Sigil before) found a service.
	for _, d := range traffic.DottedHosts(all, parsed) {
		resp.Warnings = append(resp.Warnings, d.String())
	}

	if w.dryRun || len(events) == 0 {
		return resp, nil
	}
	var version int64
	err = s.audited(ctx, events, func() error {
		var err error
		_, version, err = s.store.ApplyResources(ctx, toStore, false, s.now())
		return err
	})
	if err != nil {
		x.loaded = false // the store's state is in doubt; reload it
		return adminv1.ApplyResponse{}, err
	}
	for _, it := range changes {
		it.stored.Version, it.stored.UpdatedAt = version, s.now().UTC()
	}
	x.wrote(version, changes)
	resp.Version = version
	s.log.Info("configuration applied", "version", version, "resources", len(events), "actor", w.actor)
	s.changes.Notify()
	return resp, nil
}

// deleteConfig is DELETE /v1/config/{kind}/{namespace}/{name}.
func (s *Server) deleteConfig(r *http.Request) (any, error) {
	kind, ok := adminv1.KindOf(r.PathValue("kind"))
	if !ok {
		return nil, adminv1.Errorf(http.StatusBadRequest, "unknown kind %q", r.PathValue("kind"))
	}
	key := registry.ResourceKey{Kind: kind, Namespace: r.PathValue("namespace"), Name: r.PathValue("name")}
	resp, err := s.deleteResources(r.Context(), []registry.ResourceKey{key}, actorAdmin, "")
	if err != nil {
		return nil, err
	}
	if len(resp.Results) == 0 {
		return nil, adminv1.Errorf(http.StatusNotFound, "%s not found", resp.NotFound[0])
	}
	res := resp.Results[0]
	res.Action = adminv1.Deleted + " (version " + strconv.FormatInt(resp.Version, 10) + ")"
	return res, nil
}

// deleteConfigBatch is POST /v1/config/delete: many resources in one
// transaction, as `sigil delete -f` sends them.
func (s *Server) deleteConfigBatch(r *http.Request) (any, error) {
	var req adminv1.DeleteRequest
	if err := decodeStrict(r.Body, &req); err != nil {
		return nil, err
	}
	if n := len(req.Resources); n == 0 || n > adminv1.MaxDeleteBatch {
		return nil, adminv1.Errorf(http.StatusBadRequest, "%d resources to delete: want 1 to %d per request", n, adminv1.MaxDeleteBatch)
	}
	keys := make([]registry.ResourceKey, len(req.Resources))
	for i, k := range req.Resources {
		kind, ok := adminv1.KindOf(k.Kind)
		if !ok {
			return nil, adminv1.Errorf(http.StatusBadRequest, "resources[%d]: unknown kind %q", i, k.Kind)
		}
		keys[i] = storeKey(k)
		keys[i].Kind = kind
	}
	return s.deleteResources(r.Context(), keys, actorAdmin, "")
}

// deleteResources deletes the keys that exist, after checking that what
// stays still holds together (traffic.CheckReferences). A VirtualService
// left routing to a subset whose DestinationRule goes is allowed, as in
// Istio, and named in the response's warnings. Like applyResources it is
// the one path of the admin API and Kubernetes: actor is the audit
// records', and a resource whose origin is not origin is not deleted (a
// Conflict: see config_origin.go).
func (s *Server) deleteResources(ctx context.Context, keys []registry.ResourceKey, actor, origin string) (adminv1.DeleteResponse, error) {
	x, unlock, err := s.lockConfig(ctx)
	if err != nil {
		return adminv1.DeleteResponse{}, err
	}
	defer unlock()
	resp := adminv1.DeleteResponse{Version: x.version}
	overlay := map[string]*traffic.Resource{}
	changes := map[string]*indexed{}
	var found []registry.ResourceKey
	var events []audit.Event
	var refused []error
	var errs []error // conflicts: resources of another origin
	for _, k := range keys {
		key := k.Kind + "/" + k.Namespace + "/" + k.Name
		ref, badName := resourceRef(k)
		it, ok := x.items[key]
		if !ok {
			if badName != nil {
				// No such record can exist: say which rule the name
				// breaks rather than that it was not found.
				refused = append(refused, fmt.Errorf("%s: %w", ref, badName))
			}
			resp.NotFound = append(resp.NotFound, ref)
			continue
		}
		if _, dup := overlay[key]; dup {
			continue
		}
		if it.stored.Origin != origin {
			how := "delete the Kubernetes object instead (kubectl delete)"
			if it.stored.Origin == "" {
				how = "it was applied with sigil apply"
			}
			errs = append(errs, fmt.Errorf("%s comes from %s: %s", ref, describeOrigin(it.stored.Origin), how))
			continue
		}
		overlay[key], changes[key] = nil, nil
		found = append(found, k)
		resp.Results = append(resp.Results, adminv1.Result{Kind: k.Kind, Namespace: k.Namespace, Name: k.Name, Action: adminv1.Deleted})
		events = append(events, audit.Event{Type: auditConfigDeleted, Actor: actor, Subject: ref})
	}
	if len(refused) > 0 {
		return adminv1.DeleteResponse{}, adminv1.Errorf(http.StatusBadRequest, "%v", errors.Join(refused...))
	}
	if len(errs) > 0 {
		return adminv1.DeleteResponse{}, refuse(http.StatusConflict, ReasonConflict, "%v", errors.Join(errs...))
	}
	if len(found) == 0 {
		return resp, nil
	}
	all := x.parsedWith(overlay)
	if err := traffic.CheckReferences(all); err != nil {
		return adminv1.DeleteResponse{}, adminv1.Errorf(http.StatusConflict, "deleting %d resources would break: %v", len(found), err)
	}
	var gone []traffic.Resource
	for _, k := range found {
		if k.Kind == traffic.KindDestinationRule {
			if it, ok := x.items[k.Kind+"/"+k.Namespace+"/"+k.Name]; ok {
				gone = append(gone, it.parsed)
			}
		}
	}
	resp.Warnings = subsetWarnings(all, gone)

	var version int64
	err = s.audited(ctx, events, func() error {
		var err error
		version, err = s.store.DeleteResources(ctx, found)
		return err
	})
	if err != nil {
		x.loaded = false
		return adminv1.DeleteResponse{}, storeError(err)
	}
	x.wrote(version, changes)
	resp.Version = version
	s.log.Info("configuration deleted", "version", version, "resources", len(found), "actor", actor)
	s.changes.Notify()
	return resp, nil
}

// resourceRef names a resource in messages and audit records. A name that
// fails today's rules (only a record stored before names were checked can
// have one; it may still be deleted) is quoted, never echoed raw, and the
// rule it breaks is returned.
func resourceRef(k registry.ResourceKey) (string, error) {
	if err := traffic.ValidateMeta(k.Kind, k.Namespace, k.Name); err != nil {
		return k.Kind + " " + strconv.QuoteToASCII(k.Namespace) + "/" + strconv.QuoteToASCII(k.Name), err
	}
	return k.Kind + " " + k.Namespace + "/" + k.Name, nil
}

func prettyJSON(b []byte) string {
	if b == nil {
		return ""
	}
	var v any
	if json.Unmarshal(b, &v) != nil {
		return string(b)
	}
	out, _ := json.MarshalIndent(v, "", "  ")
	return string(out)
}

func (s *Server) listConfig(r *http.Request) (any, error) {
	kind, ok := adminv1.KindOf(r.PathValue("kind"))
	if !ok {
		return nil, adminv1.Errorf(http.StatusBadRequest, "unknown kind %q: want virtualservices, destinationrules, policies, httproutes or grpcroutes", r.PathValue("kind"))
	}
	stored, _, err := s.store.ListResources(r.Context(), kind)
	rs := make([]adminv1.Resource, len(stored))
	for i := range stored {
		rs[i] = wireResource(stored[i])
		rs[i].MeshWide = rs[i].Kind == traffic.KindPolicy && rs[i].Namespace == s.cfg.rootNamespace()
		// A record stored before today's checks may hold bytes that are
		// not JSON; it is listed with them as a JSON string, so the rest
		// still lists and this one can be seen and deleted.
		if !json.Valid(rs[i].Spec) {
			s.log.Warn("stored resource is not valid JSON; listed as a string", "kind", rs[i].Kind, "namespace", rs[i].Namespace, "name", rs[i].Name)
			rs[i].Spec, _ = json.Marshal(string(rs[i].Spec))
		}
	}
	return rs, err
}

// subsetWarnings returns, as warnings for the user, the routes of the
// whole configuration all to subsets no DestinationRule defines, that
// concern the resources touched: a VirtualService among them, or one
// routing to the host of a DestinationRule among them. Istio accepts
// such routes (they answer 503 until the subset exists), so they are
// not refused; the other routes' warnings were shown when they were
// applied.
func subsetWarnings(all, touched []traffic.Resource) []string {
	refs := map[string]bool{}
	hosts := map[string]bool{}
	for _, r := range touched {
		refs[r.Ref()] = true
		if r.DR != nil {
			if key, _, ok := traffic.HostKey(r.DR.Spec.Host, r.Namespace); ok {
				hosts[key] = true
				hosts[traffic.HostOfKey(key)] = true // UnreachableOutside.Host
			}
		}
	}
	var out []string
	for _, u := range traffic.UndefinedSubsets(all) {
		if refs[u.Source] || hosts[u.Key] {
			out = append(out, u.String())
		}
	}
	// Likewise a route delegating to a VirtualService that is not there
	// (Istio leaves the route out), when the root or the delegate was
	// touched.
	delegates := map[string]bool{}
	for _, r := range touched {
		if r.VS != nil {
			delegates[r.Namespace+"/"+r.Name] = true
		}
	}
	for _, u := range traffic.UndefinedDelegates(all) {
		if refs[u.Source] || delegates[u.Name] {
			out = append(out, u.String())
		}
	}
	// And a route to a host outside the mesh that no DestinationRule
	// says how to reach (the sidecar answers 502).
	for _, u := range traffic.UnreachableOutsideHosts(all) {
		if refs[u.Source] || hosts[u.Host] {
			out = append(out, u.String())
		}
	}
	// And a VirtualService whose routes for a host never apply, another
	// of its namespace routing that host (sidecars take one).
	for _, u := range traffic.SharedHosts(all) {
		if refs[u.Shadowed] || refs[u.Winner] {
			out = append(out, u.String())
		}
	}
	return out
}
