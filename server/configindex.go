package server

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/api/configdelta"
	"github.com/sigil-mesh/sigil/gatewayapi"
	"github.com/sigil-mesh/sigil/server/registry"
	"github.com/sigil-mesh/sigil/traffic"
	"google.golang.org/protobuf/proto"
)

// configIndex is the server's in-memory copy of the stored configuration,
// parsed once. Applies and deletes check references and sizes against it
// instead of reading and parsing every stored resource per request, which
// made a delete cost O(n) in the config's size (0.6-0.9 s each at 49k
// resources). The store stays the truth: the index reloads the resources
// whose version moved when the store's config version is not its own (a
// write it did not make).
//
// mu also serializes configuration writes, so a check and the write it
// guards see the same state.
type configIndex struct {
	mu      sync.Mutex
	loaded  bool
	version int64
	items   map[string]indexed // by traffic.Resource.Key (kind/namespace/name)
	bytes   int64              // sum of the items' encoded sizes

	// snap is the agents' view, shared by every StreamConfig until either
	// version moves.
	snap *configdelta.Snapshot
	// routes is what route status reads (k8s_routestatus.go), built at
	// most once per version; nil until asked for.
	routes *routeIndex
}

// indexed is one stored resource, parsed, with its wire form.
type indexed struct {
	stored registry.StoredResource
	parsed traffic.Resource
	wire   *agentv1.Resource
	size   int64 // proto.Size(wire): what the per-resource limit measures
	// bad is why a stored resource no longer parses (validation grew
	// stricter since it was stored). It stays deletable and replaceable,
	// but is neither checked against nor sent: one such resource must not
	// block every apply, delete and config stream.
	bad error
}

func newIndexed(sr registry.StoredResource, parsed traffic.Resource) indexed {
	w := &agentv1.Resource{Kind: sr.Kind, Namespace: sr.Namespace, Name: sr.Name, Spec: sr.Spec}
	return indexed{stored: sr, parsed: parsed, wire: w, size: int64(proto.Size(w))}
}

// lockConfig locks the index, brought up to date with the store. The
// caller must call the returned unlock.
func (s *Server) lockConfig(ctx context.Context) (*configIndex, func(), error) {
	x := &s.config
	x.mu.Lock()
	if err := x.refresh(ctx, s.store, s.log); err != nil {
		x.mu.Unlock()
		return nil, nil, err
	}
	return x, x.mu.Unlock, nil
}

// refresh reloads from the store if its config version moved; resources
// whose own version did not move keep their parsed form.
func (x *configIndex) refresh(ctx context.Context, store *registry.Store, log *slog.Logger) error {
	if x.loaded {
		v, err := store.ConfigVersion(ctx)
		if err != nil {
			return err
		}
		if v == x.version {
			return nil
		}
	}
	rs, version, err := store.ListResources(ctx, "")
	if err != nil {
		return err
	}
	items := make(map[string]indexed, len(rs))
	var total int64
	for _, sr := range rs {
		key := sr.Kind + "/" + sr.Namespace + "/" + sr.Name
		it, ok := x.items[key]
		if !ok || it.stored.Version != sr.Version {
			parsed, err := gatewayapi.FromSpec(sr.Kind, sr.Namespace, sr.Name, sr.Spec)
			it = newIndexed(sr, parsed)
			if err != nil {
				it.bad = fmt.Errorf("server: stored %s %s/%s: %w", sr.Kind, sr.Namespace, sr.Name, err)
				log.Error("stored resource no longer valid; not sent to sidecars until replaced or deleted", "resource", sr.Kind+" "+sr.Namespace+"/"+sr.Name, "error", err)
			}
		}
		items[key] = it
		total += it.size
	}
	x.items, x.version, x.bytes, x.loaded, x.snap, x.routes = items, version, total, true, nil, nil
	return nil
}

// wrote records a write the holder of mu made: the new items (nil for a
// removal) at the store's new version. A version that skipped one means
// another writer was there too, and the next lock reloads.
func (x *configIndex) wrote(version int64, changes map[string]*indexed) {
	if version != x.version+1 {
		x.loaded = false
		return
	}
	for key, it := range changes {
		if old, ok := x.items[key]; ok {
			x.bytes -= old.size
			delete(x.items, key)
		}
		if it != nil {
			x.items[key] = *it
			x.bytes += it.size
		}
	}
	x.version, x.snap, x.routes = version, nil, nil
}

// parsedWith returns every resource as it would be with overlay applied
// (nil values remove), for CheckReferences.
func (x *configIndex) parsedWith(overlay map[string]*traffic.Resource) []traffic.Resource {
	out := make([]traffic.Resource, 0, len(x.items)+len(overlay))
	for key, it := range x.items {
		if _, over := overlay[key]; !over && it.bad == nil {
			out = append(out, it.parsed)
		}
	}
	for _, r := range overlay {
		if r != nil {
			out = append(out, *r)
		}
	}
	return gatewayapi.WithVirtualServices(out) // references and warnings are checked on what sidecars get
}

// configSnapshot is what every agent's StreamConfig sends: the indexed
// resources and the endpoints (the store's and, on Kubernetes, the
// EndpointSlices': k8s_services.go). It is built once per change of
// either and shared; unchanged resources keep their pointers, so Diff
// between two snapshots costs little.
func (s *Server) configSnapshot(ctx context.Context) (*configdelta.Snapshot, error) {
	x, unlock, err := s.lockConfig(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	// Every agent's stream asks at every change: a revision read is enough
	// when nothing moved.
	k := s.kubeServicesState()
	if x.snap != nil {
		rev, err := s.store.EndpointsRevision(ctx)
		if err != nil {
			return nil, err
		}
		if x.snap.EndpointsRevision == endpointsRevision(rev, k) {
			return x.snap, nil
		}
	}
	ps, rev, err := s.store.ListProxies(ctx)
	if err != nil {
		return nil, err
	}
	snap := &configdelta.Snapshot{Version: x.version, EndpointsRevision: endpointsRevision(rev, k), RootNamespace: s.cfg.rootNamespace(),
		Endpoints: make(map[string]*agentv1.Endpoint, len(ps))}
	if x.snap != nil {
		snap.Resources = x.snap.Resources // the resources did not move; only the endpoints did
	} else {
		snap.Resources = make(map[string]*agentv1.Resource, len(x.items))
		for key, it := range x.items {
			if it.bad == nil && it.parsed.Route == nil {
				snap.Resources[key] = it.wire
			}
		}
		for key, w := range derivedWires(x.items) {
			snap.Resources[key] = w
		}
	}
	addEndpoints(snap, ps, k)
	x.snap = snap
	return snap, nil
}
