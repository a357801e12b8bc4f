package gatewayapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sigil-mesh/sigil/strictjson"
	"github.com/sigil-mesh/sigil/traffic"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// APIVersion is the only Gateway API version read.
const APIVersion = traffic.GroupGateway + "/v1"

// Route is one decoded HTTPRoute or GRPCRoute. A GRPCRoute is kept as
// written (GRPC) and also in the HTTPRoute form its gRPC matches take on
// HTTP/2 paths (spec), which is what Translate reads.
type Route struct {
	Kind       string // traffic.KindHTTPRoute or traffic.KindGRPCRoute
	Namespace  string
	Name       string
	Created    time.Time // metadata.creationTimestamp; zero when not given
	Generation int64     // metadata.generation, for status.observedGeneration

	HTTP *gwv1.HTTPRouteSpec // as written (HTTPRoute)
	GRPC *gwv1.GRPCRouteSpec // as written (GRPCRoute)

	spec  gwv1.HTTPRouteSpec // with API defaults, gRPC translated
	rules ruleSet            // spec's rules compiled, once (prepare)
}

var _ traffic.RouteObject = (*Route)(nil)

// stored is a route's stored and listed form: the spec as written, and
// the two pieces of metadata that order routes and their status.
type stored struct {
	CreationTimestamp *metav1.Time    `json:"creationTimestamp,omitempty"`
	Generation        int64           `json:"generation,omitempty"`
	Spec              json.RawMessage `json:"spec"`
}

// SpecJSON is the stored form: {"creationTimestamp", "generation",
// "spec"} (traffic.RouteObject).
func (r *Route) SpecJSON() ([]byte, error) {
	var spec any = r.HTTP
	if r.GRPC != nil {
		spec = r.GRPC
	}
	js, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("gatewayapi: %w", err)
	}
	st := stored{Generation: r.Generation, Spec: js}
	if !r.Created.IsZero() {
		st.CreationTimestamp = &metav1.Time{Time: r.Created}
	}
	return json.Marshal(st)
}

// Ref names the route in messages: "HTTPRoute ns/name".
func (r *Route) Ref() string { return r.Kind + " " + r.Namespace + "/" + r.Name }

// Decoder reads HTTPRoute and GRPCRoute documents for traffic.ParseWith.
type Decoder struct{}

var _ traffic.RouteDecoder = Decoder{}

// DecodeRoute reads a whole route object (JSON) strictly, applies the
// API server's defaults, and refuses what Sigil does not enforce, naming
// the field (traffic.RouteDecoder).
func (Decoder) DecodeRoute(kind string, js []byte) (traffic.RouteObject, error) {
	r := &Route{Kind: kind}
	var meta metav1.ObjectMeta
	switch kind {
	case traffic.KindHTTPRoute:
		var obj gwv1.HTTPRoute
		if err := decodeStrict(js, &obj); err != nil {
			return nil, err
		}
		meta, r.HTTP = obj.ObjectMeta, &obj.Spec
	case traffic.KindGRPCRoute:
		var obj gwv1.GRPCRoute
		if err := decodeStrict(js, &obj); err != nil {
			return nil, err
		}
		meta, r.GRPC = obj.ObjectMeta, &obj.Spec
	default:
		return nil, fmt.Errorf("gatewayapi: kind %q: want HTTPRoute or GRPCRoute", kind)
	}
	if err := checkAPIVersion(js); err != nil {
		return nil, err
	}
	r.Namespace, r.Name = meta.Namespace, meta.Name
	if r.Namespace == "" {
		r.Namespace = "default"
	}
	r.Created, r.Generation = meta.CreationTimestamp.Time, meta.Generation
	if err := r.prepare(); err != nil {
		return nil, err
	}
	return r, nil
}

func checkAPIVersion(js []byte) error {
	var tm metav1.TypeMeta
	if err := json.Unmarshal(js, &tm); err != nil {
		return fmt.Errorf("gatewayapi: %w", err)
	}
	if tm.APIVersion != APIVersion {
		return fmt.Errorf("gatewayapi: apiVersion %q: Sigil reads %s", tm.APIVersion, APIVersion)
	}
	return nil
}

// decodeStrict is strictjson's decoding with its errors in the words
// traffic uses for every kind.
func decodeStrict(js []byte, v any) error {
	err := strictjson.Unmarshal(js, v)
	var uf *strictjson.UnknownFieldError
	var te *json.UnmarshalTypeError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &uf):
		return fmt.Errorf("gatewayapi: field %q is not a Gateway API v1 field (or is misspelled), at %s", uf.Field, uf.Path)
	case errors.As(err, &te):
		return fmt.Errorf("gatewayapi: field %s: %s is not a valid %s", te.Field, te.Value, te.Type)
	}
	return fmt.Errorf("gatewayapi: %s", strings.TrimPrefix(strings.TrimPrefix(err.Error(), "json: "), "strictjson: "))
}

// prepare fills spec from what was written, with the API server's
// defaults, and checks that every part of it can be enforced, by
// translating the route alone for each of its Service parents and
// validating the result as any VirtualService.
func (r *Route) prepare() error {
	if r.GRPC != nil {
		spec, err := grpcToHTTP(r.GRPC)
		if err != nil {
			return err
		}
		r.spec = spec
	} else {
		r.spec = *r.HTTP.DeepCopy()
	}
	defaults(&r.spec, r.Namespace)
	if len(r.spec.Hostnames) > 0 {
		return fmt.Errorf("gatewayapi: spec.hostnames: not supported on routes attached to a Service (GAMMA routes by the Service's address; leave hostnames out)")
	}
	if err := checkParents(r); err != nil {
		return err
	}
	rules, err := compileRules(r)
	if err != nil {
		return err
	}
	for _, p := range servicesOf(r) {
		if _, err := buildVS(r.Namespace, p.svc, entriesFor(rules, p)); err != nil {
			// A value Gateway API's schema lets through and Istio's rules
			// do not (a header value with a control byte, say): named in
			// the VirtualService's terms, the only ones that reach it.
			return fmt.Errorf("gatewayapi: as the VirtualService it becomes: %w", err)
		}
	}
	r.rules = rules
	return nil
}

// Parse reads YAML or JSON documents as traffic.Parse does, with
// HTTPRoute and GRPCRoute documents read by Decoder.
func Parse(data []byte, source string) ([]traffic.Resource, error) {
	return traffic.ParseWith(data, source, Decoder{})
}

// FromSpec is traffic.FromSpec for every kind Sigil stores, routes too:
// it rebuilds a resource from its stored or streamed form.
func FromSpec(kind, namespace, name string, spec []byte) (traffic.Resource, error) {
	if kind != traffic.KindHTTPRoute && kind != traffic.KindGRPCRoute {
		return traffic.FromSpec(kind, namespace, name, spec)
	}
	res := traffic.Resource{Kind: kind, Namespace: namespace, Name: name}
	var st stored
	if err := decodeStrict(spec, &st); err != nil {
		return traffic.Resource{}, fmt.Errorf("gatewayapi: %s: %w", res.Ref(), err)
	}
	obj := map[string]any{"apiVersion": APIVersion, "kind": kind, "spec": st.Spec,
		"metadata": map[string]any{"name": name, "namespace": namespace, "generation": st.Generation, "creationTimestamp": st.CreationTimestamp}}
	js, err := json.Marshal(obj)
	if err != nil {
		return traffic.Resource{}, fmt.Errorf("gatewayapi: %s: %w", res.Ref(), err)
	}
	ro, err := Decoder{}.DecodeRoute(kind, js)
	if err != nil {
		return traffic.Resource{}, fmt.Errorf("gatewayapi: %s: %w", res.Ref(), err)
	}
	res.Route = ro
	return res, nil
}

// defaults sets what the API server's schema defaults, so that a route
// applied with `sigil apply` means what it means under kubectl.
func defaults(s *gwv1.HTTPRouteSpec, namespace string) {
	for i := range s.ParentRefs {
		p := &s.ParentRefs[i]
		if p.Group == nil {
			p.Group = ptr(gwv1.Group(gwv1.GroupName))
		}
		if p.Kind == nil {
			p.Kind = ptr(gwv1.Kind("Gateway"))
		}
		if p.Namespace == nil {
			p.Namespace = ptr(gwv1.Namespace(namespace))
		}
	}
	if len(s.Rules) == 0 {
		s.Rules = []gwv1.HTTPRouteRule{{}}
	}
	for i := range s.Rules {
		rule := &s.Rules[i]
		if len(rule.Matches) == 0 {
			rule.Matches = []gwv1.HTTPRouteMatch{{}}
		}
		for j := range rule.Matches {
			m := &rule.Matches[j]
			if m.Path == nil {
				m.Path = &gwv1.HTTPPathMatch{}
			}
			if m.Path.Type == nil {
				m.Path.Type = ptr(gwv1.PathMatchPathPrefix)
			}
			if m.Path.Value == nil {
				m.Path.Value = ptr("/")
			}
			for k := range m.Headers {
				if m.Headers[k].Type == nil {
					m.Headers[k].Type = ptr(gwv1.HeaderMatchExact)
				}
			}
			for k := range m.QueryParams {
				if m.QueryParams[k].Type == nil {
					m.QueryParams[k].Type = ptr(gwv1.QueryParamMatchExact)
				}
			}
		}
		for j := range rule.BackendRefs {
			b := &rule.BackendRefs[j]
			defaultBackend(&b.BackendObjectReference, namespace)
			if b.Weight == nil {
				b.Weight = ptr(int32(1))
			}
		}
		for j := range rule.Filters {
			if m := rule.Filters[j].RequestMirror; m != nil {
				defaultBackend(&m.BackendRef, namespace)
			}
		}
	}
}

func defaultBackend(b *gwv1.BackendObjectReference, namespace string) {
	if b.Group == nil {
		b.Group = ptr(gwv1.Group(""))
	}
	if b.Kind == nil {
		b.Kind = ptr(gwv1.Kind("Service"))
	}
	if b.Namespace == nil {
		b.Namespace = ptr(gwv1.Namespace(namespace))
	}
}

func ptr[T any](v T) *T { return &v }
