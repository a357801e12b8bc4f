// Package traffic reads Istio's VirtualService and DestinationRule
// (networking.istio.io v1, v1beta1, v1alpha3), and Sigil's own Policy
// (security.sigil.dev/v1, policy.go), strictly — a field Sigil does
// not support is refused by name, never ignored — validates them with
// errors that name the resource and the field, and compiles them into the
// routing table the sidecar consults for every request.
package traffic

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/strictjson"
	"sigs.k8s.io/yaml"
)

// Resource is one parsed configuration document.
type Resource struct {
	Kind      string
	Namespace string
	Name      string
	VS        *VirtualService
	DR        *DestinationRule
	Policy    *Policy // Sigil's own kind (policy.go)
	// Route is a Gateway API HTTPRoute or GRPCRoute, read by the
	// RouteDecoder given to ParseWith (package gatewayapi), which also
	// turns the routes into VirtualServices; traffic only carries it.
	Route RouteObject
}

// Kinds of Gateway API (gateway.networking.k8s.io) routes: traffic does
// not read them itself, ParseWith hands them to a RouteDecoder.
const (
	KindHTTPRoute = "HTTPRoute"
	KindGRPCRoute = "GRPCRoute"
	GroupGateway  = "gateway.networking.k8s.io"
)

// RouteObject is a decoded Gateway API route.
type RouteObject interface {
	// SpecJSON is the route's stored form (canonical JSON).
	SpecJSON() ([]byte, error)
}

// RouteDecoder reads a Gateway API route document (its whole object as
// JSON) of kind KindHTTPRoute or KindGRPCRoute, strictly, refusing what
// Sigil cannot enforce by field.
type RouteDecoder interface {
	DecodeRoute(kind string, js []byte) (RouteObject, error)
}

// Key identifies a resource: Kind/namespace/name.
func (r Resource) Key() string { return r.Kind + "/" + r.Namespace + "/" + r.Name }

// Ref is how errors and listings name a resource: "VirtualService default/api".
func (r Resource) Ref() string { return r.Kind + " " + r.Namespace + "/" + r.Name }

// Spec returns the resource's spec as canonical JSON, for storage and diffs.
func (r Resource) Spec() ([]byte, error) {
	switch {
	case r.VS != nil:
		return json.Marshal(r.VS.Spec)
	case r.Policy != nil:
		return json.Marshal(r.Policy.Spec)
	case r.Route != nil:
		return r.Route.SpecJSON()
	}
	return json.Marshal(r.DR.Spec)
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*(#.*)?$`)

// Parse reads one or more YAML (or JSON) documents. source names the file
// in errors. Empty documents are skipped. Gateway API routes are refused:
// ParseWith reads them.
func Parse(data []byte, source string) ([]Resource, error) { return ParseWith(data, source, nil) }

// ParseWith is Parse, with Gateway API routes (gateway.networking.k8s.io
// HTTPRoute, GRPCRoute) read by routes; nil refuses them.
func ParseWith(data []byte, source string, routes RouteDecoder) ([]Resource, error) {
	if err := CheckUTF8(data, source); err != nil {
		return nil, err
	}
	var out []Resource
	var errs []error
	for i, doc := range docSeparator.Split(string(data), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		r, err := parseDoc([]byte(doc), routes)
		if err != nil {
			errs = append(errs, fmt.Errorf("traffic: %s: document %d: %w", source, i+1, bare{err}))
			continue
		}
		out = append(out, r)
	}
	return out, errors.Join(errs...)
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, line := range strings.Split(doc, "\n") {
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

type typeMeta struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Metadata   Metadata `json:"metadata"`
}

func parseDoc(doc []byte, routes RouteDecoder) (Resource, error) {
	js, err := yaml.YAMLToJSON(doc)
	var nonFinite *json.UnsupportedValueError
	switch {
	case errors.As(err, &nonFinite):
		// YAML's .nan and .inf have no JSON form, and no field takes them.
		return Resource{}, fmt.Errorf("traffic: %s is not a finite number: give every number as digits", nonFinite.Str)
	case err != nil:
		return Resource{}, fmt.Errorf("traffic: not YAML: %w", err)
	}
	var tm typeMeta
	if err := json.Unmarshal(js, &tm); err != nil {
		return Resource{}, fmt.Errorf("traffic: not a Kubernetes-style resource: %w", err)
	}
	if strings.HasPrefix(tm.APIVersion, GroupGateway+"/") {
		return parseRoute(tm, js, routes)
	}
	isPolicy := tm.APIVersion == PolicyAPIVersion
	if !istioVersions[tm.APIVersion] && !isPolicy {
		return Resource{}, fmt.Errorf("traffic: apiVersion %q: want networking.istio.io/v1, v1beta1 or v1alpha3 (VirtualService, DestinationRule) or %s (Policy)", tm.APIVersion, PolicyAPIVersion)
	}
	if isPolicy != (tm.Kind == KindPolicy) {
		return Resource{}, fmt.Errorf("traffic: kind %s in apiVersion %q: %s has kind Policy only, and Policy is of %s", naming.Quote(tm.Kind), tm.APIVersion, PolicyAPIVersion, PolicyAPIVersion)
	}
	r := Resource{Kind: tm.Kind, Name: tm.Metadata.Name, Namespace: tm.Metadata.Namespace}
	if r.Namespace == "" {
		r.Namespace = "default"
	}
	if r.Name == "" {
		return Resource{}, fmt.Errorf("traffic: %s: metadata.name is required", naming.Quote(tm.Kind))
	}
	if tm.Kind != KindVirtualService && tm.Kind != KindDestinationRule && tm.Kind != KindPolicy {
		return Resource{}, fmt.Errorf("traffic: kind %s: Sigil reads VirtualService, DestinationRule and Policy", naming.Quote(tm.Kind))
	}
	// Before anything prints r.Ref(): a name is checked before it is shown.
	if err := ValidateMeta(r.Kind, r.Namespace, r.Name); err != nil {
		return Resource{}, err
	}
	switch tm.Kind {
	case KindVirtualService:
		r.VS = &VirtualService{}
		err = strictDecode(js, r.VS, strictjson.Proto("spec"))
	case KindDestinationRule:
		r.DR = &DestinationRule{}
		err = strictDecode(js, r.DR, strictjson.Proto("spec"))
	case KindPolicy:
		r.Policy = &Policy{}
		err = strictDecode(js, r.Policy)
	}
	return decoded(r, err)
}

// parseRoute reads a Gateway API document through routes.
func parseRoute(tm typeMeta, js []byte, routes RouteDecoder) (Resource, error) {
	if tm.Kind != KindHTTPRoute && tm.Kind != KindGRPCRoute {
		return Resource{}, fmt.Errorf("traffic: kind %s in apiVersion %q: Sigil reads HTTPRoute and GRPCRoute of %s", naming.Quote(tm.Kind), tm.APIVersion, GroupGateway)
	}
	if routes == nil {
		return Resource{}, fmt.Errorf("traffic: %s: Gateway API routes are read by sigil-server (sigil apply), not here", tm.Kind)
	}
	r := Resource{Kind: tm.Kind, Name: tm.Metadata.Name, Namespace: tm.Metadata.Namespace}
	if r.Namespace == "" {
		r.Namespace = "default"
	}
	if err := ValidateMeta(r.Kind, r.Namespace, r.Name); err != nil {
		return Resource{}, err
	}
	ro, err := routes.DecodeRoute(tm.Kind, js)
	if err != nil {
		return Resource{}, fmt.Errorf("traffic: %s: %w", r.Ref(), bare{err})
	}
	r.Route = ro
	return r, nil
}

// strictDecode decodes a resource by strictjson's rules (case-sensitive
// names; in a spec, Istio's protobuf names too) and says which field
// Sigil does not support.
func strictDecode(js []byte, v any, opts ...strictjson.Option) error {
	err := strictjson.Unmarshal(js, v, opts...)
	var uf *strictjson.UnknownFieldError
	var te *json.UnmarshalTypeError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &uf) && uf.Suggest != "":
		return fmt.Errorf("traffic: field %q is not supported: field names are case-sensitive (did you mean %q?), at %s", uf.Field, uf.Suggest, uf.Path)
	case errors.As(err, &uf):
		return fmt.Errorf("traffic: field %q is not supported by Sigil (or is misspelled), at %s", uf.Field, uf.Path)
	case errors.As(err, &te):
		return fmt.Errorf("traffic: field %s: %s is not a valid %s", te.Field, te.Value, te.Type)
	}
	return fmt.Errorf("traffic: %s", strings.TrimPrefix(strings.TrimPrefix(err.Error(), "json: "), "strictjson: "))
}

// upgradeDeprecated moves Istio's deprecated fields to their successors,
// as Istio's own translation does (the successor wins when both are
// set): fault.delay.percent to fault.delay.percentage, mirrorPercent
// (mirror_percent) to mirrorPercentage. What is stored and streamed then
// has the successors only. It runs after strictDecode, before Validate,
// which checks the deprecated values' ranges while they are still there.
func upgradeDeprecated(r *Resource) {
	if r.VS == nil {
		return
	}
	for i := range r.VS.Spec.HTTP {
		h := &r.VS.Spec.HTTP[i]
		if h.MirrorPercent != nil {
			if h.MirrorPercentage == nil && *h.MirrorPercent <= 100 {
				h.MirrorPercentage = &Percent{Value: float64(*h.MirrorPercent)}
			}
		}
		if d := h.Fault; d != nil && d.Delay != nil && d.Delay.Percent != nil {
			if d.Delay.Percentage == nil && *d.Delay.Percent >= 0 && *d.Delay.Percent <= 100 {
				d.Delay.Percentage = &Percent{Value: float64(*d.Delay.Percent)}
			}
		}
	}
}

// clearDeprecated drops the deprecated fields once Validate has checked
// them and upgradeDeprecated has moved them.
func clearDeprecated(r *Resource) {
	if r.VS == nil {
		return
	}
	for i := range r.VS.Spec.HTTP {
		h := &r.VS.Spec.HTTP[i]
		h.MirrorPercent = nil
		if h.Fault != nil && h.Fault.Delay != nil {
			h.Fault.Delay.Percent = nil
		}
	}
}

// FromSpec rebuilds a resource from its stored or streamed form (kind,
// namespace, name and spec JSON), strictly and validated: a sidecar never
// trusts what it receives more than the server trusted what it stored.
func FromSpec(kind, namespace, name string, spec []byte) (Resource, error) {
	r := Resource{Kind: kind, Namespace: namespace, Name: name}
	var err error
	switch kind {
	case KindVirtualService:
		r.VS = &VirtualService{APIVersion: "networking.istio.io/v1", Kind: kind, Metadata: Metadata{Name: name, Namespace: namespace}}
		err = strictDecode(spec, &r.VS.Spec, strictjson.Proto(""))
	case KindDestinationRule:
		r.DR = &DestinationRule{APIVersion: "networking.istio.io/v1", Kind: kind, Metadata: Metadata{Name: name, Namespace: namespace}}
		err = strictDecode(spec, &r.DR.Spec, strictjson.Proto(""))
	case KindPolicy:
		r.Policy = &Policy{APIVersion: PolicyAPIVersion, Kind: kind, Metadata: Metadata{Name: name, Namespace: namespace}}
		err = strictDecode(spec, &r.Policy.Spec)
	default:
		return Resource{}, fmt.Errorf("traffic: kind %q: want VirtualService, DestinationRule or Policy", kind)
	}
	return decoded(r, err)
}

// decoded finishes a resource whose spec was decoded with err, the one
// way Parse and FromSpec both take: a decoding error names the resource;
// deprecated fields move to their successors before validation (their
// ranges are checked there) and are cleared after, so the stored spec
// holds the successors only.
func decoded(r Resource, err error) (Resource, error) {
	if err != nil {
		return Resource{}, fmt.Errorf("traffic: %s: %w", r.Ref(), bare{err})
	}
	upgradeDeprecated(&r)
	if r.Policy != nil && r.Policy.Spec.Mode == "" {
		r.Policy.Spec.Mode = PolicyModeEnforce // stored and streamed spelled out
	}
	if err := Validate(r); err != nil {
		return Resource{}, err
	}
	clearDeprecated(&r)
	return r, nil
}

// CheckUTF8 refuses input that is not UTF-8, naming source, the line and
// the byte offset of the first bad byte. Such input is refused rather
// than read: decoding would replace the bytes with U+FFFD, so what is
// stored would differ from the file, and a later `delete -f` of the same
// file would name a resource that does not exist.
func CheckUTF8(data []byte, source string) error {
	for i := 0; i < len(data); {
		c := data[i]
		if c < utf8.RuneSelf {
			i++
			continue
		}
		r, size := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && size <= 1 {
			line := 1 + bytes.Count(data[:i], []byte("\n"))
			return fmt.Errorf("traffic: %s: line %d, byte offset %d: byte 0x%02x is not UTF-8 (save the file as UTF-8)", source, line, i, c)
		}
		i += size
	}
	return nil
}
