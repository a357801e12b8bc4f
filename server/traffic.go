package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/audit"
	"github.com/sigil-mesh/sigil/registry"
	"github.com/sigil-mesh/sigil/traffic"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// File is one file given to `sigil apply -f`.
type File struct {
	Name    string `json:"name"`
	Content string `json:"content"`
}

// ApplyRequest carries files of configuration resources.
type ApplyRequest struct {
	Files  []File `json:"files"`
	DryRun bool   `json:"dry_run"`
}

// ApplyResult is one resource's outcome, with a diff on a dry run.
type ApplyResult struct {
	registry.ApplyResult
	Diff string `json:"diff,omitempty"`
}

// ApplyResponse says what happened (or, on a dry run, would happen).
type ApplyResponse struct {
	Results []ApplyResult `json:"results"`
	Version int64         `json:"version"`
	DryRun  bool          `json:"dry_run"`
}

// proxyExpiry is how long an agent's report of its sidecars holds; agents
// report every few seconds, so an endpoint outlives its node by this much.
const proxyExpiry = 20 * time.Second

// Audit event types for configuration and endpoints.
const (
	auditConfigApplied   = "config.applied"
	auditConfigDeleted   = "config.deleted"
	auditEndpointRefused = "endpoint.refused"
)

// allowedServices maps each identity of an agent's entries to the
// services its sidecars may register: the entries' services, or, for an
// entry that names none, the service account of a
// spiffe://td/ns/<ns>/sa/<sa> ID (the Kubernetes convention).
func allowedServices(entries []registry.Entry) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for _, e := range entries {
		set := out[e.SPIFFEID]
		if set == nil {
			set = map[string]bool{}
			out[e.SPIFFEID] = set
		}
		for _, svc := range e.Services {
			set[svc] = true
		}
		if len(e.Services) == 0 {
			parts := strings.Split(e.SPIFFEID, "/")
			if n := len(parts); n >= 4 && parts[n-2] == "sa" && parts[n-4] == "ns" {
				set[parts[n-1]] = true
			}
		}
	}
	return out
}

func (s *Server) applyConfig(r *http.Request) (any, error) {
	var req ApplyRequest
	if err := decodeStrict(r.Body, &req); err != nil {
		return nil, err
	}
	if len(req.Files) == 0 {
		return nil, apiErrorf(http.StatusBadRequest, "no files")
	}
	// Parse and validate everything before anything is stored: one bad
	// resource refuses the whole apply, and the config in force stays.
	var parsed []traffic.Resource
	var errs []error
	for _, f := range req.Files {
		rs, err := traffic.Parse([]byte(f.Content), f.Name)
		if err != nil {
			errs = append(errs, err)
		}
		parsed = append(parsed, rs...)
	}
	seen := map[string]string{}
	for _, r := range parsed {
		if prev, dup := seen[r.Key()]; dup {
			errs = append(errs, fmt.Errorf("%s is given twice (%s)", r.Ref(), prev))
		}
		seen[r.Key()] = r.Ref()
	}
	if len(errs) > 0 {
		return nil, apiErrorf(http.StatusBadRequest, "%v", errors.Join(errs...))
	}
	stored, _, err := s.store.ListResources(r.Context(), "")
	if err != nil {
		return nil, err
	}
	merged, old, err := mergeResources(stored, parsed)
	if err != nil {
		return nil, err
	}
	if err := traffic.CheckReferences(merged); err != nil {
		return nil, apiErrorf(http.StatusBadRequest, "%v", err)
	}
	toStore := make([]registry.StoredResource, len(parsed))
	for i, p := range parsed {
		spec, err := p.Spec()
		if err != nil {
			return nil, err
		}
		toStore[i] = registry.StoredResource{Kind: p.Kind, Namespace: p.Namespace, Name: p.Name, Spec: spec}
	}
	// A dry run first: it is what gets audited, then applied.
	preview, version, err := s.store.ApplyResources(r.Context(), toStore, true, s.now())
	if err != nil {
		return nil, err
	}
	resp := ApplyResponse{DryRun: req.DryRun, Version: version}
	var events []audit.Event
	for i, res := range preview {
		out := ApplyResult{ApplyResult: res}
		if req.DryRun && res.Action == registry.Configured {
			out.Diff = lineDiff(prettyJSON(old[parsed[i].Key()]), prettyJSON(toStore[i].Spec))
		}
		resp.Results = append(resp.Results, out)
		if res.Action != registry.Unchanged {
			events = append(events, audit.Event{Type: auditConfigApplied, Actor: "admin", Subject: parsed[i].Ref(), Details: map[string]string{"action": res.Action}})
		}
	}
	if req.DryRun || len(events) == 0 {
		return resp, nil
	}
	if err := s.audit.Append(events...); err != nil {
		return nil, err
	}
	if _, resp.Version, err = s.store.ApplyResources(r.Context(), toStore, false, s.now()); err != nil {
		return nil, err
	}
	s.log.Info("configuration applied", "version", resp.Version, "resources", len(events))
	s.changes.Notify()
	return resp, nil
}

// mergeResources overlays parsed on stored, returning the result and the
// stored specs by key.
func mergeResources(stored []registry.StoredResource, parsed []traffic.Resource) ([]traffic.Resource, map[string][]byte, error) {
	byKey := map[string]traffic.Resource{}
	old := map[string][]byte{}
	for _, p := range parsed {
		byKey[p.Key()] = p
	}
	for _, sr := range stored {
		key := traffic.Resource{Kind: sr.Kind, Namespace: sr.Namespace, Name: sr.Name}.Key()
		if _, replaced := byKey[key]; replaced {
			// Not re-validated: a stored resource that rules added since
			// refuse can still be fixed by applying a good one over it.
			old[key] = sr.Spec
			continue
		}
		r, err := traffic.FromSpec(sr.Kind, sr.Namespace, sr.Name, sr.Spec)
		if err != nil {
			return nil, nil, fmt.Errorf("stored %s %s/%s: %w", sr.Kind, sr.Namespace, sr.Name, err)
		}
		byKey[r.Key()] = r
		old[r.Key()] = sr.Spec
	}
	out := make([]traffic.Resource, 0, len(byKey))
	for _, r := range byKey {
		out = append(out, r)
	}
	return out, old, nil
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

// kinds maps the names `sigil get` and `sigil delete` accept to kinds.
var kinds = map[string]string{
	"virtualservice": traffic.KindVirtualService, "virtualservices": traffic.KindVirtualService, "vs": traffic.KindVirtualService,
	"destinationrule": traffic.KindDestinationRule, "destinationrules": traffic.KindDestinationRule, "dr": traffic.KindDestinationRule,
}

// KindOf resolves a kind name as kubectl users type it.
func KindOf(name string) (string, bool) {
	if k, ok := kinds[strings.ToLower(name)]; ok {
		return k, true
	}
	for _, k := range kinds {
		if strings.EqualFold(k, name) {
			return k, true
		}
	}
	return "", false
}

func (s *Server) listConfig(r *http.Request) (any, error) {
	kind, ok := KindOf(r.PathValue("kind"))
	if !ok {
		return nil, apiErrorf(http.StatusBadRequest, "unknown kind %q: want virtualservices or destinationrules", r.PathValue("kind"))
	}
	rs, _, err := s.store.ListResources(r.Context(), kind)
	if rs == nil {
		rs = []registry.StoredResource{}
	}
	return rs, err
}

func (s *Server) deleteConfig(r *http.Request) (any, error) {
	kind, ok := KindOf(r.PathValue("kind"))
	if !ok {
		return nil, apiErrorf(http.StatusBadRequest, "unknown kind %q", r.PathValue("kind"))
	}
	ns, name := r.PathValue("namespace"), r.PathValue("name")
	ref := kind + " " + ns + "/" + name
	badName := traffic.ValidateMeta(kind, ns, name)
	if badName != nil {
		// Only a record stored before names were checked can have such a
		// name; it may be deleted, and is never echoed raw.
		ref = kind + " " + strconv.QuoteToASCII(ns) + "/" + strconv.QuoteToASCII(name)
	}
	// Deleting must not leave a VirtualService pointing at subsets that no
	// longer exist.
	stored, _, err := s.store.ListResources(r.Context(), "")
	if err != nil {
		return nil, err
	}
	var rest []traffic.Resource
	found := false
	for _, sr := range stored {
		if sr.Kind == kind && sr.Namespace == ns && sr.Name == name {
			found = true
			continue
		}
		res, err := traffic.FromSpec(sr.Kind, sr.Namespace, sr.Name, sr.Spec)
		if err != nil {
			return nil, err
		}
		rest = append(rest, res)
	}
	if !found && badName != nil {
		return nil, apiErrorf(http.StatusBadRequest, "%v", badName)
	}
	if !found {
		return nil, apiErrorf(http.StatusNotFound, "%s not found", ref)
	}
	if err := traffic.CheckReferences(rest); err != nil {
		return nil, apiErrorf(http.StatusConflict, "deleting %s would break: %v", ref, err)
	}
	if err := s.audit.Append(audit.Event{Type: auditConfigDeleted, Actor: "admin", Subject: ref}); err != nil {
		return nil, err
	}
	v, err := s.store.DeleteResource(r.Context(), kind, ns, name)
	if err != nil {
		return nil, storeError(err)
	}
	s.changes.Notify()
	return registry.ApplyResult{Kind: kind, Namespace: ns, Name: name, Action: registry.Deleted + " (version " + strconv.FormatInt(v, 10) + ")"}, nil
}

// ProxyStatus is a sidecar with whether it runs the current config.
type ProxyStatus struct {
	registry.ProxyRecord
	CurrentVersion int64 `json:"current_version"`
	Stale          bool  `json:"stale"`
}

func (s *Server) listProxies(r *http.Request) (any, error) {
	ps, _, err := s.store.ListProxies(r.Context())
	if err != nil {
		return nil, err
	}
	version, err := s.store.ConfigVersion(r.Context())
	if err != nil {
		return nil, err
	}
	out := make([]ProxyStatus, 0, len(ps))
	for _, p := range ps {
		out = append(out, ProxyStatus{ProxyRecord: p, CurrentVersion: version, Stale: p.ConfigVersion != version})
	}
	return out, nil
}

// ServiceInfo summarizes a service's endpoints.
type ServiceInfo struct {
	Name       string              `json:"name"`
	Endpoints  int                 `json:"endpoints"`
	Identities []string            `json:"identities"`
	Labels     []map[string]string `json:"labels"`
}

func (s *Server) listServices(r *http.Request) (any, error) {
	ps, _, err := s.store.ListProxies(r.Context())
	if err != nil {
		return nil, err
	}
	by := map[string]*ServiceInfo{}
	for _, p := range ps {
		si := by[p.Service]
		if si == nil {
			si = &ServiceInfo{Name: p.Service}
			by[p.Service] = si
		}
		si.Endpoints++
		if !slices.Contains(si.Identities, p.SPIFFEID) {
			si.Identities = append(si.Identities, p.SPIFFEID)
		}
		si.Labels = append(si.Labels, p.Labels)
	}
	out := make([]ServiceInfo, 0, len(by))
	for _, si := range by {
		out = append(out, *si)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// ReportProxies records the calling agent's sidecars. A sidecar's endpoint
// is kept only if its identity is one the agent holds an entry for, and
// that entry lets the identity serve the service (see allowedServices):
// otherwise any workload with a mesh identity could register itself as any
// service and receive that service's traffic.
func (s *Server) ReportProxies(ctx context.Context, req *agentv1.ReportProxiesRequest) (*agentv1.ReportProxiesResponse, error) {
	agent, err := s.callerAgent(ctx)
	if err != nil {
		return nil, err
	}
	entries, _, err := s.store.ListEntries(ctx, agent.String())
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	allowed := allowedServices(entries)
	recs := make([]registry.ProxyRecord, 0, len(req.GetProxies()))
	var refused []audit.Event
	for _, p := range req.GetProxies() {
		reason := ""
		if !allowed[p.GetSpiffeId()][p.GetService()] {
			reason = "its identity may not serve this service"
		} else if err := validLabels(p.GetLabels()); err != nil {
			reason = err.Error()
		}
		if reason != "" {
			refused = append(refused, audit.Event{Type: auditEndpointRefused, Actor: agent.String(), Subject: p.GetSpiffeId(),
				Details: map[string]string{"service": p.GetService(), "address": p.GetAddress(), "reason": reason}})
			continue
		}
		recs = append(recs, registry.ProxyRecord{AgentID: agent.String(), ProxyID: p.GetId(), SPIFFEID: p.GetSpiffeId(), Service: p.GetService(),
			Address: p.GetAddress(), Labels: p.GetLabels(), ConfigVersion: p.GetConfigVersion()})
	}
	if len(refused) > 0 {
		s.refusedMu.Lock()
		if len(s.refusedSeen) > 10000 {
			s.refusedSeen = map[string]bool{}
		}
		var fresh []audit.Event
		for _, e := range refused {
			key := agent.String() + "|" + e.Subject + "|" + e.Details["service"] + "|" + e.Details["address"]
			if !s.refusedSeen[key] {
				s.refusedSeen[key] = true
				fresh = append(fresh, e)
			}
		}
		s.refusedMu.Unlock()
		// Reports repeat every few seconds; each refusal is recorded once.
		if len(fresh) > 0 {
			if err := s.audit.Append(fresh...); err != nil {
				return nil, status.Error(codes.Unavailable, err.Error())
			}
			for _, e := range fresh {
				s.log.Warn("endpoint refused", "reason", e.Details["reason"], "agent", agent.String(), "spiffe_id", e.Subject, "service", e.Details["service"])
			}
		}
	}
	changed, _, err := s.store.ReplaceProxies(ctx, agent.String(), recs, s.now())
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	if changed {
		s.changes.Notify()
	}
	return &agentv1.ReportProxiesResponse{}, nil
}

// validLabels checks a sidecar's labels as Kubernetes does (the agent
// checked them too; the server trusts no agent more than it must).
func validLabels(labels map[string]string) error {
	for k, v := range labels {
		if err := traffic.ValidateLabel(k, v); err != nil {
			return err
		}
	}
	return nil
}

// configProto is the configuration and endpoints every agent gets.
func (s *Server) configProto(ctx context.Context) (*agentv1.Config, error) {
	rs, version, err := s.store.ListResources(ctx, "")
	if err != nil {
		return nil, err
	}
	ps, rev, err := s.store.ListProxies(ctx)
	if err != nil {
		return nil, err
	}
	out := &agentv1.Config{Version: version, EndpointsRevision: rev}
	for _, r := range rs {
		out.Resources = append(out.Resources, &agentv1.Resource{Kind: r.Kind, Namespace: r.Namespace, Name: r.Name, Spec: r.Spec})
	}
	for _, p := range ps {
		out.Endpoints = append(out.Endpoints, &agentv1.Endpoint{Service: p.Service, Address: p.Address, SpiffeId: p.SPIFFEID, Labels: p.Labels})
	}
	return out, nil
}
