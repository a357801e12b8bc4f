package proxy

import (
	"cmp"
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"net/url"
	"time"

	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/proxy/hop"
	"github.com/sigil-mesh/sigil/proxy/upstream"
	"github.com/sigil-mesh/sigil/traffic"
)

// route sends a request for port of svc (the port the app addressed) on.
func (o *outbound) route(w *statusRecorder, r *http.Request, svc naming.Service, port uint32) {
	o.routeKey(w, r, svc, svc.String(), port)
}

// routeKey routes a request by the VirtualService routes of key: svc's
// key, or, svc zero, a host outside the mesh (outsideRouted). It runs the
// steps of a route in Envoy's order, each in a function of its own below,
// in the order they run; a step that answers the request (or sees it
// end) says so and the route stops there:
//
//	matchRoute     the route, or the mesh's default one (fail closed)
//	injectFault    fault injection: abort, delay
//	answerLocally  redirect, directResponse
//	applyCORS      CORS preflight and marks
//	rewriteRequest rewrite, the route's and destination's headers
//	               (then a destination outside the mesh: sendOutside)
//	pickCluster    the destination's endpoints
//	prepareSend    hop-by-hop headers out, the mirror
//	send           pool, retries, timeouts, outlier detection (forward.go)
//	sendFailed     the sidecar's answer when no response came
//	respond        the response's headers, then the response
func (o *outbound) routeKey(w *statusRecorder, r *http.Request, svc naming.Service, key string, port uint32) {
	st := o.state.Load()
	// The app may not claim an identity; the receiving sidecar sets it.
	delete(r.Header, hop.XFCC)
	authority := appAuthority(r) // before a rewrite: the port the app named
	m, answered := o.matchRoute(w, r, st, svc, key, port)
	if answered || o.injectFault(w, r, m, svc, key) || answerLocally(w, r, m) {
		return
	}
	origin, answered := applyCORS(w, r, m)
	if answered {
		return
	}
	dest := m.Pick()
	w.subset = dest.Subset
	if o.rewriteRequest(w, r, m, dest) {
		return
	}
	if dest.Outside != "" {
		o.sendOutside(w, r, st, m, dest, outsideAddr{authority, port}, origin)
		return
	}
	c := o.pickCluster(w, r, st, dest, port)
	if c == nil {
		return
	}
	body, replay := readReplayable(r)
	if hop.IsWebSocketUpgrade(r.Header) {
		// Not mirrored: a copy of an upgrade has nowhere to go.
		o.upgrade(w, r, c)
		return
	}
	o.prepareSend(r, st, m, body, replay, port)
	key, setCookie := c.Hash.Key(r)
	resp, peer, done, err := o.send(r, body, replay, c, m.Route, key)
	if err != nil {
		o.sendFailed(w, r, dest, err)
		return
	}
	defer done.release()
	w.peer = peer
	respond(w, resp, m, dest, origin, setCookie)
}

// matchRoute finds the route of key that r matches at port. With none it
// answers, and reports that it did, when the mesh cannot reach key (fail
// closed) or when key's routes cover port and none matches; otherwise
// the route is the service's default one.
func (o *outbound) matchRoute(w *statusRecorder, r *http.Request, st *meshState, svc naming.Service, key string, port uint32) (traffic.Matched, bool) {
	m, ok := st.table.MatchPort(key, port, r, o.p.cfg.labels)
	if !ok && len(st.byService[svc]) == 0 && !st.table.HasRoutes(key) {
		// Fail closed: only services of the mesh are reachable through it.
		w.setFlag(flagNoRoute)
		hop.WriteError(w, r, http.StatusBadGateway, "sigil: unknown service "+key)
		return m, true
	}
	if !ok {
		if st.table.HasRoutesAt(key, port, o.p.cfg.labels) {
			w.setFlag(flagNoRoute)
			hop.WriteError(w, r, http.StatusNotFound, "sigil: no route of "+key+" matches")
			return m, true
		}
		// No VirtualService, or none with routes for this port and this
		// sidecar: every endpoint of the service, Istio's default retries.
		m = traffic.Matched{Route: o.defaultRoute(svc)}
	}
	w.route = m.Name
	return m, false
}

// injectFault applies the route's fault injection: an abort answers, a
// delay waits (unless the caller goes first). It reports whether the
// request ends here.
func (o *outbound) injectFault(w *statusRecorder, r *http.Request, m traffic.Matched, svc naming.Service, key string) bool {
	if m.AbortPct > 0 && rand.Float64()*100 < m.AbortPct {
		w.setFlag(flagFaultAbort)
		o.abort(w, r, o.serviceLabel(svc, key), m.Route)
		return true
	}
	if m.Delay > 0 && rand.Float64()*100 < m.DelayPct {
		w.setFlag(flagFaultDelay)
		t := time.NewTimer(m.Delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return true
		}
	}
	return false
}

// answerLocally answers with the route's redirect or directResponse, when
// it has one, and reports whether it did.
func answerLocally(w *statusRecorder, r *http.Request, m traffic.Matched) bool {
	if rd := m.Redirect; rd != nil {
		redirect(w, r, m)
		return true
	}
	if d := m.Direct; d != nil {
		directResponse(w, d, m.Headers)
		return true
	}
	return false
}

// applyCORS answers a CORS preflight the route's corsPolicy covers, and
// otherwise marks the answer with the origin it allows, now, so the
// sidecar's own answers (503, 504) carry the marks too. It returns the
// allowed origin and whether it answered.
func applyCORS(w *statusRecorder, r *http.Request, m traffic.Matched) (string, bool) {
	origin := corsOrigin(r, m.CORS)
	if corsPreflight(w, r, m.CORS, origin) {
		return origin, true
	}
	corsMark(w.Header(), m.CORS, origin)
	return origin, false
}

// rewriteRequest applies the route's rewrite and the route's and dest's
// request headers and authority. It reports whether it refused the
// request (a rewrite that left no valid path).
func (o *outbound) rewriteRequest(w *statusRecorder, r *http.Request, m traffic.Matched, dest traffic.WeightedDest) bool {
	if err := o.rewrite(r, m); err != nil {
		w.setFlag(flagBadRequest)
		refuseTarget(w, r, err)
		return true
	}
	applyHeaders(r.Header, m.Headers, true)
	applyHeaders(r.Header, dest.Headers, true)
	setAuthority(r, m.Headers)
	setAuthority(r, dest.Headers)
	return false
}

// pickCluster is the cluster of dest (at the port the app addressed when
// dest names none), pinned to the endpoint the app dialled when it did
// (clusterip.go); nil, after answering 503, when it has no endpoint.
func (o *outbound) pickCluster(w *statusRecorder, r *http.Request, st *meshState, dest traffic.WeightedDest, port uint32) *upstream.Cluster {
	c := pinned(r.Context(), o.clusterAt(st, naming.Service{Name: dest.Service, Namespace: dest.Namespace}, dest.Subset, cmp.Or(dest.Port, port)))
	if c == nil || len(c.Eps) == 0 {
		w.setFlag(flagNoHealthy)
		hop.WriteError(w, r, http.StatusServiceUnavailable, "sigil: no healthy upstream for "+dest.Service+subsetSuffix(dest.Subset))
		return nil
	}
	return c
}

// prepareSend strips the request's hop-by-hop headers, once, for every
// attempt and the mirror, which only read them, and sends the mirror's
// copy when the route mirrors this request (port: the one the app
// addressed, for a mirror that names none).
func (o *outbound) prepareSend(r *http.Request, st *meshState, m traffic.Matched, body []byte, replay bool, port uint32) {
	hop.StripRequestHeaders(r.Header)
	hop.NoDefaultUserAgent(r.Header)
	if m.Mirror != nil && rand.Float64()*100 < m.MirrorPct {
		o.mirrorAny(st, r, body, replay, m.MirrorTo, m.Mirror, cmp.Or(m.MirrorPort, port))
	}
}

// sendFailed answers a request to dest that got no response: 503 with
// X-Sigil-Overflow when its connection pool overflowed, 504 when the
// route's timeout passed, 503 naming the reason otherwise.
func (o *outbound) sendFailed(w *statusRecorder, r *http.Request, dest traffic.WeightedDest, err error) {
	var of upstream.OverflowError
	switch {
	case errors.As(err, &of):
		w.setFlag(flagOverflow)
		o.p.metrics.overflows.WithLabelValues(o.p.names.FQDN(naming.Service{Name: dest.Service, Namespace: dest.Namespace})).Inc()
		w.Header().Set("X-Sigil-Overflow", "connection pool of "+dest.Service+subsetSuffix(dest.Subset)+" is full")
		hop.WriteError(w, r, http.StatusServiceUnavailable, "sigil: upstream connection pool overflow ("+dest.Service+subsetSuffix(dest.Subset)+")")
	case errors.Is(err, context.DeadlineExceeded):
		w.setFlag(flagTimeout)
		hop.WriteError(w, r, http.StatusGatewayTimeout, "sigil: upstream request timeout")
	default:
		w.setFlag(flagUpstreamFail)
		hop.WriteError(w, r, http.StatusServiceUnavailable, "sigil: upstream "+dest.Service+" failed: "+reasonOf(err))
	}
}

// respond copies resp to the app: its hop-by-hop headers out first (the
// upstream's Connection header may not remove the route's headers), then
// the consistent-hash cookie when one was minted (nil: none), the route's
// and dest's response headers and the CORS marks for origin.
func respond(w *statusRecorder, resp *http.Response, m traffic.Matched, dest traffic.WeightedDest, origin string, setCookie *http.Cookie) {
	hop.RemoveHeaders(resp.Header)
	if setCookie != nil {
		resp.Header.Add("Set-Cookie", setCookie.String())
	}
	applyHeaders(resp.Header, m.Headers, false)
	applyHeaders(resp.Header, dest.Headers, false)
	corsMark(resp.Header, m.CORS, origin)
	hop.CopyResponse(w, resp)
}

func subsetSuffix(s string) string {
	if s == "" {
		return ""
	}
	return "/" + s
}

// defaultRoute is the route of a service no VirtualService covers,
// compiled once per service and kept in o.defaults.
func (o *outbound) defaultRoute(svc naming.Service) *traffic.Route {
	if rt, ok := o.defaults.Load(svc); ok {
		return rt.(*traffic.Route)
	}
	rt := traffic.Compile(0, []traffic.Resource{{Kind: traffic.KindVirtualService, Namespace: svc.Namespace, Name: "default", VS: &traffic.VirtualService{
		Spec: traffic.VirtualServiceSpec{Hosts: []string{svc.Name}, HTTP: []traffic.HTTPRoute{{Route: []traffic.HTTPRouteDestination{{Destination: traffic.Destination{Host: svc.Name}}}}}},
	}}})
	m, _ := rt.Match(svc.String(), &http.Request{URL: &url.URL{Path: "/"}, Header: http.Header{}}, nil)
	o.defaults.Store(svc, m.Route)
	return m.Route
}
