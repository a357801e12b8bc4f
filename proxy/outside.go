package proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/proxy/hop"
	"github.com/sigil-mesh/sigil/proxy/upstream"
	"github.com/sigil-mesh/sigil/traffic"
)

// Hosts outside the mesh under VirtualServices (docs/istio.md, Hosts
// outside the mesh). A VirtualService applies to a host outside the mesh
// as to a service (Istio's sidecar builds the same routes for a
// ServiceEntry host): the app's request for it is matched, faulted,
// redirected, rewritten and given headers by the host's routes, and goes
// to the destination they pick; a destination outside the mesh, whether
// the route is the outside host's own or a mesh service's, is sent to
// that host as its DestinationRule says (tls DISABLE, SIMPLE or MUTUAL at
// the port), with the route's timeout and retries. Without such a rule
// the sidecar answers 502: only the hosts a DestinationRule names are
// reachable.

// outsideRouted returns the key of the host outside the mesh a request is
// for, and the port it addressed, when destOf refused its host (err) as
// not in the mesh and a VirtualService has routes for that host, this
// sidecar and that port (Table.HasRoutesAt); otherwise "" and port
// unchanged, and the request goes on as before (externalOf: the
// DestinationRule alone, or refused).
func (o *outbound) outsideRouted(r *http.Request, err error, port uint16) (string, uint16) {
	if !errors.Is(err, naming.ErrNotInMesh) {
		return "", port
	}
	authority := appAuthority(r)
	host, p := authority, uint16(0)
	if h, _, splitErr := net.SplitHostPort(authority); splitErr == nil {
		host = h
		if p, err = naming.Port(authority); err != nil {
			return "", port
		}
	}
	name, err := naming.ParseHostPattern(host)
	if err != nil || name.IsWildcard() {
		return "", port // an IP address or a malformed name: never a VirtualService's host
	}
	if p == 0 {
		p = defaultHTTPPort
	}
	key := traffic.OutsideKey(name.String())
	if !o.state.Load().table.HasRoutesAt(key, uint32(p), o.p.cfg.labels) {
		return "", port
	}
	return key, p
}

// appAuthority is the authority the app addressed: the absolute-form
// target's (RFC 9112 §3.2.2), else the Host header.
func appAuthority(r *http.Request) string {
	if r.Method != http.MethodConnect && r.URL.IsAbs() {
		return rawAuthority(r.RequestURI, r.URL.Host)
	}
	return r.Host
}

// outsideAddr is what the app addressed: its authority (before any
// rewrite) and the port (80 when the authority names none).
type outsideAddr struct {
	authority string
	port      uint32
}

// outsideTarget returns the external target of a route's destination
// outside the mesh and the address to dial: the destination's port, else
// the port the app named when the destination is the host it addressed,
// else the port of what goes on the wire (443 with TLS originated, 80
// without: externalTarget.hostPort). A nil target with a nil error: no
// DestinationRule says how to reach the host at that port.
func (o *outbound) outsideTarget(st *meshState, dest traffic.WeightedDest, app outsideAddr) (*externalTarget, string, error) {
	port := uint16(dest.Port)
	if port == 0 {
		port = uint16(app.port)
	}
	t, err := o.externalFor(st, dest.Outside, port)
	if t == nil || err != nil {
		return nil, "", err
	}
	authority := dest.Outside
	switch {
	case dest.Port != 0:
		authority = net.JoinHostPort(dest.Outside, strconv.Itoa(int(dest.Port)))
	default:
		if p, err := naming.Port(app.authority); err == nil && p != 0 {
			authority = net.JoinHostPort(dest.Outside, strconv.Itoa(int(p)))
		}
	}
	h, p, err := t.hostPort(authority)
	if err != nil {
		return nil, "", err
	}
	return t, net.JoinHostPort(h, p), nil
}

// noRuleMessage is the answer to a request routed to a host outside the
// mesh that no DestinationRule says how to reach.
func noRuleMessage(host string, port uint16) string {
	return "sigil: " + host + " is outside the mesh and no DestinationRule says how to reach it on port " + strconv.Itoa(int(port)) +
		": add a DestinationRule for host " + host + " with trafficPolicy.tls.mode DISABLE, SIMPLE or MUTUAL"
}

// sendOutside sends a request a route picked dest for, dest being outside
// the mesh, to that host: through its external target, with the route's
// timeout, per-try timeout and retries (tries, as send), the mirror, and
// the route's and destination's response headers and CORS marks. The
// request's headers have had the hop-by-hop and identity headers taken
// out (ServeHTTP, routeKey): the mesh's identity never leaves the mesh.
func (o *outbound) sendOutside(w *statusRecorder, r *http.Request, st *meshState, m traffic.Matched, dest traffic.WeightedDest, app outsideAddr, origin string) {
	if dest.Subset != "" {
		// A host outside the mesh has no subsets (its DestinationRule may
		// define none): as for any subset no rule defines.
		w.setFlag(flagNoHealthy)
		hop.WriteError(w, r, http.StatusServiceUnavailable, "sigil: no healthy upstream for "+dest.Outside+subsetSuffix(dest.Subset))
		return
	}
	t, addr, err := o.outsideTarget(st, dest, app)
	switch {
	case err != nil:
		o.p.log.Warn("tls origination refused", "host", dest.Outside, "error", err)
		w.setFlag(flagUpstreamFail)
		hop.WriteError(w, r, http.StatusBadGateway, "sigil: cannot reach "+dest.Outside+": "+err.Error())
		return
	case t == nil:
		w.setFlag(flagNoRoute)
		hop.WriteError(w, r, http.StatusBadGateway, noRuleMessage(dest.Outside, uint16(cmp.Or(dest.Port, app.port))))
		return
	}
	body, replay := readReplayable(r)
	if hop.IsWebSocketUpgrade(r.Header) {
		// Not mirrored, as between sidecars; HTTP/1.1 whatever the
		// target's ALPN (Go's transport sends upgrades over HTTP/1).
		o.upgradeVia(w, r, t.transport, externalScheme(t), addr)
		return
	}
	o.prepareSend(r, st, m, body, replay, app.port)
	resp, cancel, err := o.sendExternal(r, t, addr, body, replay, m.Route)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			w.setFlag(flagTimeout)
			hop.WriteError(w, r, http.StatusGatewayTimeout, "sigil: upstream request timeout")
			return
		}
		w.setFlag(flagUpstreamFail)
		hop.WriteError(w, r, http.StatusServiceUnavailable, "sigil: upstream "+t.host+" failed: "+reasonOf(err))
		return
	}
	defer cancel()
	respond(w, resp, m, dest, origin, nil)
}

// sendExternal sends r to addr through t with rt's timeout and retries,
// within the retry budget Envoy gives a cluster by default (20% of the
// requests in flight to the target, at least 3: the rule's only field
// outside the mesh is tls, so no connectionPool changes it); the
// returned cancel closes the response and frees its contexts.
func (o *outbound) sendExternal(r *http.Request, t *externalTarget, addr string, body []byte, replay bool, rt *traffic.Route) (*http.Response, func(), error) {
	ctx, cancel := r.Context(), context.CancelFunc(func() {})
	if rt.Timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, rt.Timeout)
	}
	release, err := t.pool.Acquire(ctx) // never full: it counts for the retry budget
	if err != nil {
		cancel()
		return nil, nil, err
	}
	attempts := rt.Attempts
	if !replay {
		attempts = 0
	}
	label := o.hostLabel(t.host)
	tr := tries{rt: rt, attempts: attempts, budget: t.pool.CanRetry,
		try: func(ctx context.Context, n int) (*http.Response, error) {
			if n > 0 {
				defer t.pool.StartRetry()()
			}
			return t.transport.RoundTrip(externalRequest(ctx, r, t, addr, body, replay))
		},
		retried: func(exhausted bool) {
			if exhausted {
				o.p.metrics.retryBudget.WithLabelValues(label).Inc()
				return
			}
			o.p.metrics.retries.WithLabelValues(label).Inc()
		},
	}
	resp, tryCancel, err := tr.run(ctx)
	if err != nil {
		release()
		cancel()
		return nil, nil, err
	}
	return resp, func() { resp.Body.Close(); tryCancel(); release(); cancel() }, nil
}

// externalRequest is one attempt of r to addr of an outside host: a
// shallow copy sharing r's (already stripped) headers, plain http or
// https as t originates TLS; the body from body when it can be replayed.
func externalRequest(ctx context.Context, r *http.Request, t *externalTarget, addr string, body []byte, replay bool) *http.Request {
	out := outRequest(ctx, r, &upstream.Endpoint{Addr: addr}, body, replay)
	out.URL.Scheme = externalScheme(t)
	return out
}

// externalScheme is the scheme of requests to t: https when the sidecar
// originates TLS.
func externalScheme(t *externalTarget) string {
	if t.tls != nil {
		return "https"
	}
	return "http"
}

// mirrorAny mirrors to the route's mirror: a mesh service (mirror), or,
// to zero, the host outside the mesh the mirror names, through its
// external target; a mirror no DestinationRule says how to reach is
// counted as no_rule (sigil_mirror_requests_total) and logged.
func (o *outbound) mirrorAny(st *meshState, r *http.Request, body []byte, replay bool, to naming.Service, d *traffic.Destination, destPort uint32) {
	if !to.IsZero() {
		o.mirror(st, r, body, replay, to, d, destPort)
		return
	}
	key, _, _ := traffic.HostKey(d.Host, "")
	host := traffic.HostOfKey(key)
	label := o.hostLabel(host)
	if !replay {
		o.p.metrics.mirrors.WithLabelValues(label, "skipped_body").Inc()
		return
	}
	dest := traffic.WeightedDest{Outside: host, Port: portOf(d)}
	t, addr, err := o.outsideTarget(st, dest, outsideAddr{port: destPort})
	if t == nil || err != nil {
		o.p.metrics.mirrors.WithLabelValues(label, "no_rule").Inc()
		o.p.log.Warn("mirror to a host outside the mesh that no DestinationRule says how to reach", "host", host, "port", destPort, "error", err)
		return
	}
	o.shadow(label, t.transport, func(ctx context.Context) *http.Request {
		return externalRequest(ctx, r, t, addr, body, true)
	})
}

// hostLabel is the metric label of host, outside the mesh (Table.HostLabel:
// the host or wildcard a resource names, never a name only the app
// chose); "" and unknownService stay as they are.
func (o *outbound) hostLabel(host string) string {
	if host == "" || host == unknownService {
		return host
	}
	return o.state.Load().table.HostLabel(host)
}

// serviceLabel is the destination_service of the sidecar's own counters
// for a request routed by key: a mesh service's host (svc's FQDN, so that
// namespaces count apart), else the label of the host outside the mesh
// (hostLabel).
func (o *outbound) serviceLabel(svc naming.Service, key string) string {
	if svc.IsZero() {
		return o.hostLabel(key)
	}
	return o.p.names.FQDN(svc)
}

// portOf is a destination's port.number, 0 when unset.
func portOf(d *traffic.Destination) uint32 {
	if d.Port == nil {
		return 0
	}
	return d.Port.Number
}

// outsideL4 returns the key of the host outside the mesh a CONNECT is for,
// and its port, when destOf refused its host (err) as not in the mesh and
// a VirtualService has tls routes for it, or a tcp route that matches
// the port for this sidecar; otherwise "" (the DestinationRule alone
// reaches the host: connectExternal).
func (o *outbound) outsideL4(r *http.Request, err error) (string, uint16) {
	if !errors.Is(err, naming.ErrNotInMesh) {
		return "", 0
	}
	host, _, splitErr := net.SplitHostPort(r.Host)
	port, portErr := naming.Port(r.Host)
	if splitErr != nil || portErr != nil || port == 0 {
		return "", 0
	}
	name, err := naming.ParseHostPattern(host)
	if err != nil || name.IsWildcard() {
		return "", 0
	}
	t, key := o.state.Load().table, traffic.OutsideKey(name.String())
	if _, ok := t.MatchTCP(key, uint32(port), o.p.cfg.labels); !ok && !t.HasTLSRoutes(key) {
		return "", 0
	}
	return key, port
}

// openOutside opens a connection a tcp or tls route sends to dest, a host
// outside the mesh, on its port (else the port the app addressed):
// through the target of the host's DestinationRule (plain TCP for
// DISABLE, which carries the app's own TLS in passthrough; TLS the
// sidecar originates for SIMPLE and MUTUAL). svc and key are what the app
// addressed, for the record.
func (o *outbound) openOutside(ctx context.Context, st *meshState, svc naming.Service, key string, dest traffic.WeightedDest, port uint32) (net.Conn, *requestRecord, error) {
	p := cmp.Or(dest.Port, port)
	t, addr, err := o.outsideTarget(st, dest, outsideAddr{authority: net.JoinHostPort(dest.Outside, strconv.Itoa(int(p))), port: p})
	switch {
	case err != nil:
		return nil, nil, fmt.Errorf("proxy: cannot reach %s: %w", dest.Outside, err)
	case t == nil:
		return nil, nil, errors.New("proxy: " + strings.TrimPrefix(noRuleMessage(dest.Outside, uint16(p)), "sigil: "))
	}
	up, err := t.dial(ctx, addr)
	if err != nil {
		return nil, nil, fmt.Errorf("proxy: upstream %s failed: %s", dest.Outside, reasonOf(err))
	}
	return up, o.tcpRecord(svc, outsideLabel(svc, key), nil, nil), nil
}

// outsideLabel is the host label of a record for key: the host outside
// the mesh when svc is zero, else "" (the service labels it).
func outsideLabel(svc naming.Service, key string) string {
	if svc.IsZero() {
		return traffic.HostOfKey(key)
	}
	return ""
}
