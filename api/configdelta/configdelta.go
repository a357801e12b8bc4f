// Package configdelta carries the traffic configuration from the server to
// agents and from agents to sidecars as per-resource deltas of bounded
// size, the way Envoy's incremental xDS (DeltaDiscoveryResponse) and
// Istio's delta push do: the whole state first, then only what was added,
// changed or removed.
//
// Why: the configuration used to travel whole in one message, on the same
// stream as the node's registration entries and trust bundle. Once its
// encoding passed gRPC's 4 MiB message limit, every stream failed in a loop
// and identities stopped reaching nodes. Split into deltas, no message is
// larger than MaxMessageBytes plus one resource (itself bounded at apply
// time), whatever the total; and configuration has its own stream, so it
// can never hold identity back.
//
// Senders hold the Snapshot they last sent and call Diff; receivers feed
// every delta to a Receiver, which returns a Snapshot only when a delta is
// marked complete.
package configdelta

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"google.golang.org/protobuf/proto"
)

// MaxMessageBytes is the encoded size a sender fills one delta up to. A
// resource larger than this travels alone, so a delta is at most this plus
// one resource; with resources capped at 1 MiB at apply time a delta stays
// well under gRPC's 4 MiB default.
const MaxMessageBytes = 1 << 20

// Snapshot is a configuration and endpoint set, indexed by key. A published
// Snapshot is never changed: senders and receivers build new ones.
type Snapshot struct {
	Version           int64
	EndpointsRevision int64
	// RootNamespace is the namespace whose Policies are mesh-wide
	// (traffic.PolicyFor's root); "" is traffic.RootNamespace.
	RootNamespace string
	// Resources by ResourceKey; Endpoints by EndpointKey.
	Resources map[string]*agentv1.Resource
	Endpoints map[string]*agentv1.Endpoint
}

// ResourceKey identifies a resource: kind/namespace/name.
func ResourceKey(r *agentv1.Resource) string {
	return r.GetKind() + "/" + r.GetNamespace() + "/" + r.GetName()
}

// EndpointKey identifies an endpoint by everything it carries, labels
// included, so an endpoint never changes in place.
func EndpointKey(e *agentv1.Endpoint) string {
	var b strings.Builder
	b.WriteString(e.GetService() + "\x00" + e.GetNamespace() + "\x00" + e.GetAddress() + "\x00" + e.GetSpiffeId())
	if e.GetServicePort() != 0 || len(e.GetClusterIps()) > 0 || e.GetProtocol() != "" {
		// Kubernetes endpoints: one pod serves each port of a Service, and
		// its virtual IPs may change (a Service recreated).
		b.WriteString("\x00:" + strconv.FormatUint(uint64(e.GetServicePort()), 10) + "\x00" + strings.Join(e.GetClusterIps(), ",") + "\x00" + e.GetProtocol())
	}
	for _, k := range slices.Sorted(maps.Keys(e.GetLabels())) {
		b.WriteString("\x00" + k + "=" + e.GetLabels()[k])
	}
	return b.String()
}

// FromConfig indexes a whole configuration.
func FromConfig(c *agentv1.Config) *Snapshot {
	s := &Snapshot{Version: c.GetVersion(), EndpointsRevision: c.GetEndpointsRevision(), RootNamespace: c.GetRootNamespace(),
		Resources: make(map[string]*agentv1.Resource, len(c.GetResources())), Endpoints: make(map[string]*agentv1.Endpoint, len(c.GetEndpoints()))}
	for _, r := range c.GetResources() {
		s.Resources[ResourceKey(r)] = r
	}
	for _, e := range c.GetEndpoints() {
		s.Endpoints[EndpointKey(e)] = e
	}
	return s
}

// Config returns the snapshot as one Config, resources and endpoints in key
// order. It is for the receiver's own use (compiling routes, /config); it
// is never sent whole.
func (s *Snapshot) Config() *agentv1.Config {
	out := &agentv1.Config{Version: s.Version, EndpointsRevision: s.EndpointsRevision, RootNamespace: s.RootNamespace,
		Resources: make([]*agentv1.Resource, 0, len(s.Resources)), Endpoints: make([]*agentv1.Endpoint, 0, len(s.Endpoints))}
	for _, k := range slices.Sorted(maps.Keys(s.Resources)) {
		out.Resources = append(out.Resources, s.Resources[k])
	}
	for _, k := range slices.Sorted(maps.Keys(s.Endpoints)) {
		out.Endpoints = append(out.Endpoints, s.Endpoints[k])
	}
	return out
}

// Same reports whether two snapshots carry the same versions and content.
func Same(a, b *Snapshot) bool {
	if a == b {
		return true
	}
	if a == nil || b == nil || a.Version != b.Version || a.EndpointsRevision != b.EndpointsRevision || a.RootNamespace != b.RootNamespace ||
		len(a.Resources) != len(b.Resources) || len(a.Endpoints) != len(b.Endpoints) {
		return false
	}
	for k, r := range b.Resources {
		if !sameResource(a.Resources[k], r) {
			return false
		}
	}
	for k := range b.Endpoints {
		if _, ok := a.Endpoints[k]; !ok {
			return false
		}
	}
	return true
}

func sameResource(a, b *agentv1.Resource) bool {
	return a == b || (a != nil && b != nil && bytes.Equal(a.GetSpec(), b.GetSpec()))
}

// Diff returns the deltas that take a receiver holding from (nil: a new
// stream, which starts with full) to to. Each delta is filled up to
// maxBytes of encoded resources and endpoints; one item larger than that
// goes alone. The last delta is marked complete; there is always at least
// one, so a receiver learns new versions even when nothing else changed.
func Diff(from, to *Snapshot, maxBytes int) []*agentv1.ConfigDelta {
	var out []*agentv1.ConfigDelta
	cur := &agentv1.ConfigDelta{Version: to.Version, EndpointsRevision: to.EndpointsRevision, RootNamespace: to.RootNamespace, Full: from == nil}
	size := 0
	add := func(n int, put func(d *agentv1.ConfigDelta)) {
		if size > 0 && size+n > maxBytes {
			out = append(out, cur)
			cur = &agentv1.ConfigDelta{Version: to.Version, EndpointsRevision: to.EndpointsRevision, RootNamespace: to.RootNamespace}
			size = 0
		}
		put(cur)
		size += n
	}
	if from == nil {
		from = &Snapshot{}
	}
	// Find what differs in one unsorted pass (an endpoint change against
	// 40,000 unchanged resources costs pointer comparisons, not a sort),
	// then send it in key order. Removals go first, so a receiver never
	// holds two resources for one key.
	var goneRes, newRes, goneEps, newEps []string
	for k := range from.Resources {
		if _, ok := to.Resources[k]; !ok {
			goneRes = append(goneRes, k)
		}
	}
	for k, r := range to.Resources {
		if !sameResource(from.Resources[k], r) {
			newRes = append(newRes, k)
		}
	}
	for k := range from.Endpoints {
		if _, ok := to.Endpoints[k]; !ok {
			goneEps = append(goneEps, k)
		}
	}
	for k := range to.Endpoints {
		if _, ok := from.Endpoints[k]; !ok {
			newEps = append(newEps, k)
		}
	}
	for _, k := range sorted(goneRes) {
		r := from.Resources[k]
		gone := &agentv1.Resource{Kind: r.GetKind(), Namespace: r.GetNamespace(), Name: r.GetName()}
		add(proto.Size(gone), func(d *agentv1.ConfigDelta) { d.RemovedResources = append(d.RemovedResources, gone) })
	}
	for _, k := range sorted(goneEps) {
		e := from.Endpoints[k]
		add(proto.Size(e), func(d *agentv1.ConfigDelta) { d.RemovedEndpoints = append(d.RemovedEndpoints, e) })
	}
	for _, k := range sorted(newRes) {
		r := to.Resources[k]
		add(proto.Size(r), func(d *agentv1.ConfigDelta) { d.Resources = append(d.Resources, r) })
	}
	for _, k := range sorted(newEps) {
		e := to.Endpoints[k]
		add(proto.Size(e), func(d *agentv1.ConfigDelta) { d.Endpoints = append(d.Endpoints, e) })
	}
	cur.Complete = true
	return append(out, cur)
}

func sorted(keys []string) []string {
	slices.Sort(keys)
	return keys
}

// ErrNoFull is returned for a delta that arrives before any full one: the
// receiver does not know what it is a change to.
var ErrNoFull = errors.New("configdelta: a delta before the stream's first (full) delta")

// Receiver assembles deltas. The zero value is ready; use one per stream.
type Receiver struct {
	started bool
	res     map[string]*agentv1.Resource
	eps     map[string]*agentv1.Endpoint
}

// Apply takes one delta. When the delta is complete it returns the
// snapshot now held (a copy the caller may keep); otherwise nil.
func (r *Receiver) Apply(d *agentv1.ConfigDelta) (*Snapshot, error) {
	if d.GetFull() {
		r.started = true
		r.res, r.eps = map[string]*agentv1.Resource{}, map[string]*agentv1.Endpoint{}
	}
	if !r.started {
		return nil, ErrNoFull
	}
	for _, x := range d.GetRemovedResources() {
		delete(r.res, ResourceKey(x))
	}
	for _, x := range d.GetRemovedEndpoints() {
		delete(r.eps, EndpointKey(x))
	}
	for _, x := range d.GetResources() {
		if x.GetKind() == "" || x.GetName() == "" {
			return nil, fmt.Errorf("configdelta: resource %q without kind or name", ResourceKey(x))
		}
		r.res[ResourceKey(x)] = x
	}
	for _, x := range d.GetEndpoints() {
		r.eps[EndpointKey(x)] = x
	}
	if !d.GetComplete() {
		return nil, nil
	}
	return &Snapshot{Version: d.GetVersion(), EndpointsRevision: d.GetEndpointsRevision(), RootNamespace: d.GetRootNamespace(), Resources: maps.Clone(r.res), Endpoints: maps.Clone(r.eps)}, nil
}
