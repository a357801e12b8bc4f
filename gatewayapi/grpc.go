package gatewayapi

import (
	"fmt"
	"regexp"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// grpcToHTTP writes a GRPCRoute as the HTTPRoute it is on the wire: a
// gRPC call is an HTTP/2 POST to /<service>/<method> (gRPC over HTTP/2,
// "Path"), so a method match is a path match, and header matches,
// header filters, mirrors and weighted backends carry over unchanged.
// Istio translates GRPCRoute the same way.
func grpcToHTTP(g *gwv1.GRPCRouteSpec) (gwv1.HTTPRouteSpec, error) {
	out := gwv1.HTTPRouteSpec{CommonRouteSpec: *g.CommonRouteSpec.DeepCopy()}
	out.Hostnames = append(out.Hostnames, g.Hostnames...)
	for i, r := range g.Rules {
		p := fmt.Sprintf("spec.rules[%d]", i)
		if r.SessionPersistence != nil {
			return out, unsupported(p+".sessionPersistence", "session persistence is not enforced by Sigil's sidecars")
		}
		hr := gwv1.HTTPRouteRule{Name: r.Name}
		for j, m := range r.Matches {
			hm, err := grpcMatch(m, fmt.Sprintf("%s.matches[%d]", p, j))
			if err != nil {
				return out, err
			}
			hr.Matches = append(hr.Matches, hm)
		}
		for j, f := range r.Filters {
			hf, err := grpcFilter(f, fmt.Sprintf("%s.filters[%d]", p, j))
			if err != nil {
				return out, err
			}
			hr.Filters = append(hr.Filters, hf)
		}
		for j, b := range r.BackendRefs {
			hb := gwv1.HTTPBackendRef{BackendRef: *b.BackendRef.DeepCopy()}
			for k, f := range b.Filters {
				hf, err := grpcFilter(f, fmt.Sprintf("%s.backendRefs[%d].filters[%d]", p, j, k))
				if err != nil {
					return out, err
				}
				hb.Filters = append(hb.Filters, hf)
			}
			hr.BackendRefs = append(hr.BackendRefs, hb)
		}
		out.Rules = append(out.Rules, hr)
	}
	return out, nil
}

// grpcMatch is a GRPCRoute match as an HTTPRoute match. Exact service
// and method: the exact path /service/method; either alone, or a
// RegularExpression match: a path regex with the other part any one
// path segment. Neither: every path (PathPrefix "/", the default).
func grpcMatch(m gwv1.GRPCRouteMatch, p string) (gwv1.HTTPRouteMatch, error) {
	var out gwv1.HTTPRouteMatch
	for _, h := range m.Headers {
		hm := gwv1.HTTPHeaderMatch{Name: gwv1.HTTPHeaderName(h.Name), Value: h.Value, Type: ptr(gwv1.HeaderMatchExact)}
		if h.Type != nil && *h.Type == gwv1.GRPCHeaderMatchRegularExpression {
			hm.Type = ptr(gwv1.HeaderMatchRegularExpression)
		}
		out.Headers = append(out.Headers, hm)
	}
	mm := m.Method
	if mm == nil || (mm.Service == nil && mm.Method == nil) {
		return out, nil
	}
	regex := mm.Type != nil && *mm.Type == gwv1.GRPCMethodMatchRegularExpression
	part := func(s *string) string {
		switch {
		case s == nil || *s == "":
			return "[^/]+"
		case regex:
			return "(?:" + *s + ")"
		}
		return regexp.QuoteMeta(*s)
	}
	if !regex && mm.Service != nil && mm.Method != nil {
		out.Path = &gwv1.HTTPPathMatch{Type: ptr(gwv1.PathMatchExact), Value: ptr("/" + *mm.Service + "/" + *mm.Method)}
		return out, nil
	}
	re := "/" + part(mm.Service) + "/" + part(mm.Method)
	if _, err := regexp.Compile(re); err != nil {
		return out, fmt.Errorf("gatewayapi: %s.method: not an RE2 regular expression: %v", p, err)
	}
	out.Path = &gwv1.HTTPPathMatch{Type: ptr(gwv1.PathMatchRegularExpression), Value: ptr(re)}
	return out, nil
}

func grpcFilter(f gwv1.GRPCRouteFilter, p string) (gwv1.HTTPRouteFilter, error) {
	switch f.Type {
	case gwv1.GRPCRouteFilterRequestHeaderModifier:
		return gwv1.HTTPRouteFilter{Type: gwv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: f.RequestHeaderModifier}, nil
	case gwv1.GRPCRouteFilterResponseHeaderModifier:
		return gwv1.HTTPRouteFilter{Type: gwv1.HTTPRouteFilterResponseHeaderModifier, ResponseHeaderModifier: f.ResponseHeaderModifier}, nil
	case gwv1.GRPCRouteFilterRequestMirror:
		return gwv1.HTTPRouteFilter{Type: gwv1.HTTPRouteFilterRequestMirror, RequestMirror: f.RequestMirror}, nil
	}
	return gwv1.HTTPRouteFilter{}, unsupported(p+".type", "filter type %q is not supported (RequestHeaderModifier, ResponseHeaderModifier, RequestMirror are)", f.Type)
}
