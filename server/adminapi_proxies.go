package server

import (
	"context"
	"net/http"
	"slices"
	"sort"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/naming"
)

func (s *Server) listProxies(r *http.Request) (any, error) {
	ps, _, err := s.store.ListProxies(r.Context())
	if err != nil {
		return nil, err
	}
	version, err := s.store.ConfigVersion(r.Context())
	if err != nil {
		return nil, err
	}
	out := make([]adminv1.ProxyStatus, 0, len(ps))
	for _, p := range ps {
		out = append(out, adminv1.ProxyStatus{Proxy: wireProxy(p), CurrentVersion: version, Stale: p.ConfigVersion != version})
	}
	return out, nil
}

func (s *Server) listServices(r *http.Request) (any, error) { return s.services(r.Context()) }

// services summarizes the registered sidecars by service, sorted by
// namespace and name.
func (s *Server) services(ctx context.Context) ([]adminv1.ServiceInfo, error) {
	ps, _, err := s.store.ListProxies(ctx)
	if err != nil {
		return nil, err
	}
	by := map[naming.Service]*adminv1.ServiceInfo{}
	for _, p := range ps {
		key := naming.Service{Name: p.Service, Namespace: p.Namespace}
		si := by[key]
		if si == nil {
			si = &adminv1.ServiceInfo{Name: p.Service, Namespace: p.Namespace}
			by[key] = si
		}
		si.Endpoints++
		if !slices.Contains(si.Identities, p.SPIFFEID) {
			si.Identities = append(si.Identities, p.SPIFFEID)
		}
		si.Labels = append(si.Labels, p.Labels)
	}
	out := make([]adminv1.ServiceInfo, 0, len(by))
	for _, si := range by {
		out = append(out, *si)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}
