package proxy

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/api/configdelta"
	proxyv1 "github.com/sigil-mesh/sigil/api/proxy/v1"
	"github.com/sigil-mesh/sigil/internal/backoff"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/proxy/upstream"
	"github.com/sigil-mesh/sigil/traffic"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// meshState is what the sidecar routes by: the compiled configuration and
// the endpoints of every service. It is replaced whole, atomically.
type meshState struct {
	table        *traffic.Table
	version      int64
	endpointsRev int64
	byService    map[naming.Service][]*upstream.Endpoint
	// vips maps a Kubernetes Service's cluster IP and port to it: a
	// transparently captured connection to one is for that service.
	vips map[netip.AddrPort]naming.Service
	// ports holds, per service, the ports its endpoints declare serving
	// (Kubernetes Service ports); a service absent has endpoints that
	// serve every port (sidecars registered on plain hosts).
	ports map[naming.Service]map[uint32]bool
	// opaque holds, per service, the ports its Service declares opaque
	// TCP (Endpoint.protocol "tcp"): never sniffed.
	opaque map[naming.Service]map[uint32]bool
	// clusters caches clusterAt per clusterKey (and external.go's targets
	// per their string key): a state never changes,
	// so its clusters are built once, not on every request.
	clusters sync.Map
}

func fmtAny(v any) string { return fmt.Sprintf("%v", v) }

// cluster is clusterAt for no particular port.
func (o *outbound) cluster(st *meshState, service naming.Service, subset string) *upstream.Cluster {
	return o.clusterAt(st, service, subset, 0)
}

// clusterAt returns the endpoints and policy for requests to port (0: no
// port-level policy) of a service's subset, or nil when the subset is not
// defined. As in Envoy, each port of a service is a cluster of its own:
// its own pool and balancer state.
func (o *outbound) clusterAt(st *meshState, service naming.Service, subset string, port uint32) *upstream.Cluster {
	if len(st.byService[service]) == 0 {
		// Nothing to balance over; and caching a cluster (and its pool)
		// per name would let an app grow them with names of its choosing.
		return nil
	}
	if port != 0 && !st.table.HasPortPolicy(service.String(), port) && !st.ports[service][port] {
		// A port no portLevelSettings names and no endpoint declares
		// shares the port-less cluster: an app cannot grow clusters (and
		// pools) by dialling ports.
		port = 0
	}
	key := clusterKey{service, subset, port}
	if c, ok := st.clusters.Load(key); ok {
		return c.(*upstream.Cluster)
	}
	c := o.buildCluster(st, service, subset, port)
	st.clusters.Store(key, c)
	return c
}

// clusterKey is a key of meshState.clusters for clusterAt: a struct, not a
// joined string, so that the lookup each request makes allocates nothing.
type clusterKey struct {
	service naming.Service
	subset  string
	port    uint32
}

func (o *outbound) buildCluster(st *meshState, service naming.Service, subset string, port uint32) *upstream.Cluster {
	eps := st.byService[service]
	if st.ports[service][port] {
		// A Kubernetes Service port: the pods' endpoints of that port (as
		// Envoy's cluster per service port). A port the Service does not
		// declare keeps them all.
		var on []*upstream.Endpoint
		for _, e := range eps {
			if e.SvcPort == 0 || e.SvcPort == port {
				on = append(on, e)
			}
		}
		eps = on
	}
	if subset != "" {
		labels, ok := st.table.SubsetLabels(service.String(), subset)
		if !ok {
			return nil
		}
		var in []*upstream.Endpoint
		for _, e := range eps {
			if hasLabels(e.Labels, labels) {
				in = append(in, e)
			}
		}
		eps = in
	}
	policy := st.table.PolicyAt(service.String(), subset, port)
	if o.upstream.SetMax(eps, upstream.MaxConnectionsOf(policy)) && o.loop != nil {
		// The loop's idle connections would hold the lowered cap's
		// slots, which the goroutine path (where the loop hands such a
		// cluster's requests) needs.
		o.loop.CloseIdle()
	}
	o.upstream.SetDial(eps, upstream.DialPolicyOf(policy))
	pl, rr := o.clusters.PoolFor(service.String()+"|"+subset+"|"+strconv.FormatUint(uint64(port), 10), policy)
	return upstream.NewCluster(o.p.names.FQDN(service), subset, eps, policy, pl, rr, o.clock)
}

func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// setState builds a state from a configuration (nil: keep the current
// table) and endpoints, reusing endpoint objects that did not change.
func (o *outbound) setState(table *traffic.Table, version, rev int64, eps []*agentv1.Endpoint) {
	o.epMu.Lock()
	defer o.epMu.Unlock()
	st := &meshState{table: table, version: version, endpointsRev: rev, byService: map[naming.Service][]*upstream.Endpoint{}}
	seen := map[string]bool{}
	add := func(service naming.Service, ep naming.Endpoint, port uint32, id spiffeid.ID, labels map[string]string) {
		addr := ep.String()
		key := service.String() + "|" + addr + "|" + id.String() + "|" + fmtAny(sortedLabels(labels))
		if port != 0 {
			key += "|" + strconv.FormatUint(uint64(port), 10)
		}
		e := o.endpoints[key]
		if e == nil {
			e = o.newEndpoint(ep, port, id, labels)
			if !o.synced {
				e.Joined = time.Time{} // here before this sidecar: warm
			}
			o.endpoints[key] = e
		}
		seen[key] = true
		st.byService[service] = append(st.byService[service], e)
	}
	static := make(map[naming.Service]*Upstream, len(o.p.cfg.upstreams))
	for name, up := range o.p.cfg.upstreams {
		static[naming.Service{Name: name, Namespace: namespaceOf(up.ID, o.p.names.Namespace())}] = up
	}
	for _, ep := range eps {
		id, err := naming.ParseAnyWorkloadID(ep.GetSpiffeId())
		if err != nil {
			o.p.log.Warn("endpoint with a bad identity ignored", "service", ep.GetService(), "address", ep.GetAddress())
			continue
		}
		// A workload's namespace is its SPIFFE ID's; the registered one
		// counts only for an ID without one.
		ns, err := naming.WorkloadNamespace(id, ep.GetNamespace())
		if err != nil {
			o.p.log.Warn("endpoint with a bad namespace ignored", "service", ep.GetService(), "address", ep.GetAddress(), "error", err)
			continue
		}
		svc := naming.Service{Name: ep.GetService(), Namespace: ns}
		if static[svc] != nil {
			continue // --upstream wins over discovery for its service
		}
		addr, err := naming.ParseEndpoint(ep.GetAddress())
		if err != nil {
			o.p.log.Warn("endpoint with a bad address ignored", "service", ep.GetService(), "error", err)
			continue
		}
		port := ep.GetServicePort()
		if port > 65535 {
			o.p.log.Warn("endpoint with a bad service port ignored", "service", ep.GetService(), "address", ep.GetAddress())
			continue
		}
		add(svc, addr, port, id, ep.GetLabels())
		if port != 0 {
			st.declarePort(svc, port, ep.GetProtocol() == "tcp")
			st.addVIPs(svc, uint16(port), ep.GetClusterIps(), o.p.log)
		}
	}
	st.dropConflictingVIPs(o.p.log)
	for svc, up := range static {
		for _, addr := range up.Endpoints {
			add(svc, addr, 0, up.ID, nil)
		}
	}
	for key, e := range o.endpoints {
		if !seen[key] {
			delete(o.endpoints, key)
			// Requests in flight finish; pooled connections then close.
			time.AfterFunc(time.Minute, e.Close)
		}
	}
	o.state.Store(st)
}

// markSynced records that a discovery snapshot is in force: endpoints
// seen from now on are new to the service, and warm up (slowStart).
func (o *outbound) markSynced() {
	o.epMu.Lock()
	o.synced = true
	o.epMu.Unlock()
}

// namespaceOf is the namespace of a workload with identity id
// (spiffe://td/ns/<ns>/sa/<sa>), def for an ID of another form or none,
// and "" when the ID's namespace is not a DNS label (no service has it).
func namespaceOf(id spiffeid.ID, def string) string {
	ns, _, ok := naming.NamespaceServiceAccount(id)
	switch {
	case !ok:
		return def
	case !naming.ValidNamespace(ns):
		return ""
	}
	return ns
}

func sortedLabels(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

func (o *outbound) newEndpoint(ep naming.Endpoint, port uint32, id spiffeid.ID, labels map[string]string) *upstream.Endpoint {
	return upstream.NewEndpoint(ep, port, id, labels, o.now(), o, upstream.Metrics{ProtocolError: o.p.metrics.protocolError("outbound"), H1Retried: o.p.metrics.h1Retried, H2Retried: o.p.metrics.h2Retried})
}

// discover follows the agent's Discovery stream until ctx is done,
// reconnecting on the backoff schedule (internal/backoff); closing it (ctx
// done) deregisters the endpoint.
func (p *Proxy) discover(ctx context.Context, o *outbound, advertise string) {
	var b backoff.Backoff
	stats := make(statsOutbox, 1)
	tick := time.NewTicker(cmp.Or(p.cfg.StatsInterval, DefaultStatsInterval))
	defer tick.Stop()
	go p.statsLoop(ctx, tick.C, stats)
	for ctx.Err() == nil {
		got, err := p.discoverOnce(ctx, o, advertise, stats)
		if ctx.Err() != nil {
			return
		}
		if got {
			b.Reset()
		}
		wait := b.Next()
		p.log.Warn("discovery stream ended; keeping the last configuration and reconnecting", "error", err, "retry_in", wait.String())
		if !backoff.Sleep(ctx, wait, nil) {
			return
		}
	}
}

// discoverOnce follows one Discovery stream: it registers, applies the
// configuration the agent sends, and sends the golden-metrics reports
// that come to stats meanwhile.
func (p *Proxy) discoverOnce(ctx context.Context, o *outbound, advertise string, stats statsOutbox) (bool, error) {
	conn, err := grpc.NewClient("unix://"+p.cfg.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return false, err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := proxyv1.NewDiscoveryClient(conn).Stream(ctx)
	if err != nil {
		return false, err
	}
	if err := stream.Send(&proxyv1.DiscoveryRequest{Msg: &proxyv1.DiscoveryRequest_Register{Register: &proxyv1.Register{
		Service: p.cfg.Service, Address: advertise, Labels: p.cfg.labels, Namespace: p.names.Namespace(),
	}}}); err != nil {
		return false, err
	}
	// gRPC streams take one sender at a time: acks, reports and taps
	// share mu.
	var mu sync.Mutex
	go p.sendStats(ctx, stats, &mu, stream.Send)
	go p.taps.pump(ctx, &mu, stream.Send)
	ship := &shipStream{acks: make(chan auditAck, 1), done: ctx.Done(), send: func(m *proxyv1.DiscoveryRequest) error {
		mu.Lock()
		defer mu.Unlock()
		return stream.Send(m)
	}}
	p.shipper.attach(ship)
	defer p.shipper.detach(ship)
	got := false
	var deltas configdelta.Receiver
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			return got, fmt.Errorf("proxy: agent closed the stream")
		}
		if err != nil {
			return got, err
		}
		got = true
		if c := msg.GetTap(); c != nil {
			p.taps.control(c)
			continue
		}
		if a := msg.GetAuditAck(); a != nil {
			ship.ack(a.GetBatchId(), a.GetError(), a.GetDiscarded())
			continue
		}
		snap, err := deltas.Apply(msg.GetDelta())
		if err != nil {
			return got, err
		}
		if snap == nil {
			continue // more of this change to come
		}
		version := p.applyConfig(o, snap.Config())
		mu.Lock()
		err = stream.Send(&proxyv1.DiscoveryRequest{Msg: &proxyv1.DiscoveryRequest_Ack{Ack: &proxyv1.Ack{
			ConfigVersion: version, EndpointsRevision: snap.EndpointsRevision,
		}}})
		mu.Unlock()
		if err != nil {
			return got, err
		}
	}
}

// applyConfig compiles and swaps in a configuration and returns the
// version now in force. A configuration that does not validate is refused
// whole: the sidecar keeps the one it had (and acknowledges that version,
// so `sigil get proxies` shows it stale), but takes the new endpoints.
func (p *Proxy) applyConfig(o *outbound, cfg *agentv1.Config) int64 {
	cur := o.state.Load()
	if cur.table != nil && cfg.GetVersion() == cur.version {
		// Only endpoints moved: the routes compiled for this version stand.
		o.setState(cur.table, cur.version, cfg.GetEndpointsRevision(), cfg.GetEndpoints())
		o.markSynced()
		return cur.version
	}
	var rs []traffic.Resource
	var errs []string
	for _, r := range cfg.GetResources() {
		res, err := traffic.FromSpec(r.GetKind(), r.GetNamespace(), r.GetName(), r.GetSpec())
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		rs = append(rs, res)
	}
	if len(errs) == 0 {
		if err := traffic.CheckReferences(rs); err != nil {
			errs = append(errs, err.Error())
		}
	}
	table, version := cur.table, cur.version
	if len(errs) > 0 {
		p.metrics.configs.WithLabelValues("refused").Inc()
		p.log.Error("configuration refused; keeping the one in force", "version", cfg.GetVersion(), "in_force", version, "errors", strings.Join(errs, "; "))
	} else if cfg.GetVersion() != version || table == nil {
		// References were checked across every namespace, as the server
		// did; the table holds what is exported to this one (exportTo) and
		// selects this workload (workloadSelector, by its --labels).
		routes := make([]traffic.Resource, 0, len(rs))
		for _, r := range rs {
			if r.Policy == nil {
				routes = append(routes, r)
			}
		}
		table, version = traffic.CompileFor(cfg.GetVersion(), traffic.SelectedFor(routes, p.names.Namespace(), p.cfg.labels), p.names.Namespace()), cfg.GetVersion()
		p.applyPolicies(context.Background(), rs, cfg.GetRootNamespace())
		p.metrics.configs.WithLabelValues("applied").Inc()
		p.log.Info("configuration applied", "version", version, "resources", len(rs))
	}
	o.setState(table, version, cfg.GetEndpointsRevision(), cfg.GetEndpoints())
	o.markSynced()
	p.metrics.configVersion.Set(float64(version))
	return version
}

// advertiseAddr is the inbound address other sidecars reach: --advertise,
// or the bound address when that is one (naming.ParseEndpoint refuses an
// unspecified IP).
func advertiseAddr(cfg *checked, bound net.Addr) (string, error) {
	if cfg.Advertise != "" {
		return cfg.Advertise, nil
	}
	ep, err := naming.ParseEndpoint(bound.String())
	if err != nil || !ep.Addr().IsValid() {
		return "", fmt.Errorf("proxy: --inbound %s listens on every address; give --advertise IP:PORT", cfg.Inbound)
	}
	return ep.String(), nil
}
