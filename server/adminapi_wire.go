package server

import (
	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/server/registry"
)

// The admin API sends its own wire types (api/admin/v1), never the
// store's: a client links no store, and a store field never reaches the
// wire by accident. These convert a store record to its wire twin, field
// by field; TestWireTwins checks that every field crosses.

func wireEntry(e registry.Entry) adminv1.Entry {
	sels := make([]adminv1.Selector, len(e.Selectors))
	for i, s := range e.Selectors {
		sels[i] = adminv1.Selector{Type: s.Type, Value: s.Value}
	}
	if e.Selectors == nil {
		sels = nil
	}
	return adminv1.Entry{ID: e.ID, SPIFFEID: e.SPIFFEID, ParentID: e.ParentID, Selectors: sels, X509TTL: e.X509TTL,
		Services: e.Services, JWTTTL: e.JWTTTL, Source: e.Source, Revision: e.Revision, CreatedAt: e.CreatedAt}
}

func wireEntries(es []registry.Entry) []adminv1.Entry {
	out := make([]adminv1.Entry, len(es))
	for i, e := range es {
		out[i] = wireEntry(e)
	}
	return out
}

func wireAgent(a registry.Agent) adminv1.Agent {
	return adminv1.Agent{SPIFFEID: a.SPIFFEID, Attestor: a.Attestor, Node: a.Node, Serial: a.Serial, ExpiresAt: a.ExpiresAt, AttestedAt: a.AttestedAt}
}

func wireResource(r registry.StoredResource) adminv1.Resource {
	return adminv1.Resource{Kind: r.Kind, Namespace: r.Namespace, Name: r.Name, Spec: r.Spec, Version: r.Version, UpdatedAt: r.UpdatedAt, Origin: r.Origin}
}

func wireProxy(p registry.ProxyRecord) adminv1.Proxy {
	return adminv1.Proxy{AgentID: p.AgentID, ProxyID: p.ProxyID, SPIFFEID: p.SPIFFEID, Service: p.Service, Address: p.Address,
		Labels: p.Labels, ConfigVersion: p.ConfigVersion, ReportedAt: p.ReportedAt, Namespace: p.Namespace}
}

func storeKey(k adminv1.ResourceKey) registry.ResourceKey {
	return registry.ResourceKey{Kind: k.Kind, Namespace: k.Namespace, Name: k.Name}
}
