package server

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/audit"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/registry"
	"github.com/sigil-mesh/sigil/traffic"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
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
// entry that names none, the service account of an ID of exactly the form
// spiffe://td/ns/<ns>/sa/<sa> (the Kubernetes convention,
// naming.NamespaceServiceAccount).
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
			if id, err := spiffeid.FromString(e.SPIFFEID); err == nil {
				if _, sa, ok := naming.NamespaceServiceAccount(id); ok {
					set[sa] = true
				}
			}
		}
	}
	return out
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
	for i := range rs {
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
		if err := naming.ValidateLabel(k, v); err != nil {
			return err
		}
	}
	return nil
}
