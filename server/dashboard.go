package server

import (
	"context"
	"slices"
	"sort"
	"strconv"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/dashboard"
	"github.com/sigil-mesh/sigil/naming"
)

// dashboardView is what the server tells the dashboard without any
// traffic: registered services, the identities it issued, the CA's
// rotation state and the weighted routes in force.
type dashboardView struct{ s *Server }

var (
	_ dashboard.Inventory   = dashboardView{}
	_ dashboard.SplitSource = dashboardView{}
)

// Services returns the registered services (GET /v1/services).
func (v dashboardView) Services(ctx context.Context) ([]adminv1.ServiceInfo, error) {
	return v.s.services(ctx)
}

// Identities lists the server's own SVID, every attested agent's and the
// workload SVIDs this process issued, with the CA's authorities.
func (v dashboardView) Identities(ctx context.Context) (dashboard.Identities, error) {
	s := v.s
	out := dashboard.Identities{Authorities: s.ca.Authorities()}
	out.BundleSequence, _ = s.ca.Bundle().SequenceNumber()
	if leaf := s.svid.Load().Leaf; leaf != nil {
		out.SVIDs = append(out.SVIDs, dashboard.SVID{SPIFFEID: naming.ServerID(s.cfg.td).String(), Kind: dashboard.SVIDServer, Serial: leaf.SerialNumber.Text(16), IssuedAt: leaf.NotBefore, NotAfter: leaf.NotAfter})
	}
	agents, err := s.store.ListAgents(ctx)
	if err != nil {
		return out, err
	}
	for _, a := range agents {
		out.SVIDs = append(out.SVIDs, dashboard.SVID{SPIFFEID: a.SPIFFEID, Kind: dashboard.SVIDAgent, Node: a.Node, Serial: a.Serial, NotAfter: a.ExpiresAt})
	}
	proxies, _, err := s.store.ListProxies(ctx)
	if err != nil {
		return out, err
	}
	services := map[string][]string{} // SPIFFE ID → "svc.ns"
	for _, p := range proxies {
		name := naming.Service{Name: p.Service, Namespace: p.Namespace}.String()
		if !slices.Contains(services[p.SPIFFEID], name) {
			services[p.SPIFFEID] = append(services[p.SPIFFEID], name)
		}
	}
	nodes := map[string]string{}
	for _, a := range agents {
		nodes[a.SPIFFEID] = a.Node
	}
	for _, r := range s.issued.list(s.now()) {
		svcs := services[r.id]
		sort.Strings(svcs)
		out.SVIDs = append(out.SVIDs, dashboard.SVID{SPIFFEID: r.id, Kind: dashboard.SVIDWorkload, Agent: r.agent, Node: nodes[r.agent], Serial: r.serial, IssuedAt: r.issuedAt, NotAfter: r.notAfter, Services: svcs})
	}
	sort.SliceStable(out.SVIDs, func(i, j int) bool { return out.SVIDs[i].NotAfter.Before(out.SVIDs[j].NotAfter) })
	return out, nil
}

// Splits lists the HTTP routes of the VirtualServices in force that name
// a subset or divide traffic between destinations: what a canary or a
// blue/green is configured as.
func (v dashboardView) Splits(ctx context.Context, namespace string) ([]dashboard.Split, error) {
	x, unlock, err := v.s.lockConfig(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	var out []dashboard.Split
	for _, it := range x.items {
		vs := it.parsed.VS
		if it.bad != nil || vs == nil || (namespace != "" && it.parsed.Namespace != namespace) {
			continue
		}
		resolver, err := naming.NewResolver(it.parsed.Namespace, naming.DefaultClusterDomain)
		if err != nil {
			continue // a stored namespace is valid; nothing to show if not
		}
		for i, route := range vs.Spec.HTTP {
			split := len(route.Route) > 1
			for _, d := range route.Route {
				split = split || d.Destination.Subset != ""
			}
			if !split {
				continue
			}
			sp := dashboard.Split{Namespace: it.parsed.Namespace, VirtualService: it.parsed.Name, Route: route.Name, Hosts: vs.Spec.Hosts}
			if sp.Route == "" {
				sp.Route = "#" + strconv.Itoa(i)
			}
			for _, d := range route.Route {
				dest := dashboard.Destination{Namespace: it.parsed.Namespace, Service: d.Destination.Host, Subset: d.Destination.Subset}
				if svc, err := resolver.Host(d.Destination.Host); err == nil {
					dest.Namespace, dest.Service = svc.Namespace, svc.Name
				}
				switch {
				case d.Weight != nil:
					dest.Weight = *d.Weight
				case len(route.Route) == 1:
					dest.Weight = 100 // Istio: a lone destination takes everything
				}
				sp.Destinations = append(sp.Destinations, dest)
			}
			out = append(out, sp)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if a.VirtualService != b.VirtualService {
			return a.VirtualService < b.VirtualService
		}
		return a.Route < b.Route
	})
	return out, nil
}
