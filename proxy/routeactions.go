package proxy

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/sigil-mesh/sigil/protocol"
	"github.com/sigil-mesh/sigil/proxy/hop"
	"github.com/sigil-mesh/sigil/traffic"
)

// abort answers with the fault's status, in the caller's protocol, and
// counts it under label (serviceLabel).
func (o *outbound) abort(w http.ResponseWriter, r *http.Request, label string, rt *traffic.Route) {
	o.p.metrics.faults.WithLabelValues(label, "abort").Inc()
	if rt.AbortGRPC >= 0 || (hop.ProtocolOf(r) == protocol.GRPC && rt.AbortHTTP == 0) {
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Grpc-Status", strconv.Itoa(max(rt.AbortGRPC, 0)))
		w.Header().Set("Grpc-Message", "fault filter abort")
		w.WriteHeader(http.StatusOK)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(rt.AbortHTTP)
	io.WriteString(w, "fault filter abort\n")
}

// directResponse answers with the route's directResponse, no upstream
// involved: its status and body, as text/plain when it has a body (as
// Envoy's direct responses are sent), the route's response headers
// applied.
func directResponse(w http.ResponseWriter, d *traffic.DirectResponse, hs *traffic.Headers) {
	h := w.Header()
	if len(d.Body) > 0 {
		h.Set("Content-Type", "text/plain")
	}
	h.Set("Content-Length", strconv.Itoa(len(d.Body)))
	applyHeaders(h, hs, false)
	w.WriteHeader(d.Status)
	w.Write(d.Body)
}

// redirect answers with the route's redirect (traffic.Matched.RedirectLocation
// says how Istio's fields apply).
func redirect(w http.ResponseWriter, r *http.Request, m traffic.Matched) {
	loc, code, _ := m.RedirectLocation(r)
	http.Redirect(w, r, loc, code)
}

// rewrite replaces the matched prefix (or the whole path) and the
// authority (traffic.Matched.RewritePath says how). Routes match the
// decoded path, so the rewrite works on it too (an escaped slash kept by
// --path-with-escaped-slashes is decoded by a rewrite: docs/security.md),
// and the result is normalized again, since a prefix rewrite can join
// "/v1/" and "../x" into a path the peer would resolve outside the route.
// An error means the request must be refused.
func (o *outbound) rewrite(r *http.Request, m traffic.Matched) error {
	rw := m.Rewrite
	if rw == nil {
		return nil
	}
	if rw.URI != "" || rw.URIRegexRewrite != nil {
		rewritten := url.URL{Path: m.RewritePath(r.URL.Path)}
		p, err := o.p.cfg.paths.Path(rewritten.EscapedPath())
		if err != nil {
			return fmt.Errorf("proxy: rewritten path: %w", err)
		}
		if err := setEscapedPath(r.URL, p); err != nil {
			return err
		}
	}
	if rw.Authority != "" {
		r.Host = rw.Authority
	}
	return nil
}

func applyHeaders(h http.Header, hs *traffic.Headers, request bool) {
	if hs == nil {
		return
	}
	ops := hs.Response
	if request {
		ops = hs.Request
	}
	if ops == nil {
		return
	}
	for k, v := range ops.Set {
		if !request || !traffic.IsAuthorityHeader(k) {
			h.Set(k, v)
		}
	}
	for k, v := range ops.Add {
		if !request || !traffic.IsAuthorityHeader(k) {
			h.Add(k, v)
		}
	}
	for _, k := range ops.Remove {
		h.Del(k)
	}
}

// setAuthority applies a request header operation on host or :authority
// (set or add; validation allows one per route): it replaces the
// authority sent upstream, as Envoy does, rather than adding a Host
// field that Go's transport would ignore.
func setAuthority(r *http.Request, hs *traffic.Headers) {
	if hs == nil || hs.Request == nil {
		return
	}
	for _, ops := range []map[string]string{hs.Request.Set, hs.Request.Add} {
		for k, v := range ops {
			if traffic.IsAuthorityHeader(k) {
				r.Host = v
			}
		}
	}
}
