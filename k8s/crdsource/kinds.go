// Package crdsource mirrors Sigil's configuration objects from the
// Kubernetes API server into the server's configuration: Istio's
// VirtualService and DestinationRule (networking.istio.io), Sigil's
// Policy (security.sigil.dev) and, where the server reads them, Gateway
// API's HTTPRoute and GRPCRoute attached to a Service (GAMMA).
//
// A Source watches every kind whose CustomResourceDefinition the API
// server serves (discovery tells, asked again when a CRD changes and
// every Options.Rescan, so installing Istio's CRDs later works) with a
// dynamic informer, and hands each object to a Store one at a time: a
// refused object blocks no other. It then reports the answer in the
// object's status, through the status subresource, as Istio and Gateway
// API implementations do: an Accepted condition, True with reason
// Accepted, or False with the Store's reason and message. Deleted
// objects are removed from the Store; at start, and every rescan, objects
// the Store holds that Kubernetes no longer has are removed too.
//
//	src, err := crdsource.New(crdsource.Options{Dynamic: c.Dynamic, Discovery: c.Core.Discovery(), Store: st})
//	err = src.Start(ctx, &wg) // returns once the objects present are mirrored
package crdsource

import (
	"context"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// StatusShape is how a kind's status reports the Accepted condition.
type StatusShape int

const (
	// StatusConditions writes status.conditions (merged by type) and
	// status.observedGeneration: Istio's IstioStatus (IstioCondition
	// carries observedGeneration since Istio 1.25) and Kubernetes'
	// metav1.Condition, which Sigil's Policy uses.
	StatusConditions StatusShape = iota
	// StatusRouteParents writes Gateway API's status.parents: one
	// RouteParentStatus per parentRef that is a Service, under
	// ControllerName, with the Accepted and ResolvedRefs conditions.
	StatusRouteParents
)

// Kind is one kind of object a Source watches.
type Kind struct {
	Group    string // API group: networking.istio.io
	Kind     string // VirtualService
	Resource string // the plural resource name: virtualservices
	// Versions are the versions Sigil reads, preferred first; the first
	// one the API server serves is watched (all of them hold the same
	// object, converted by the API server).
	Versions []string
	Status   StatusShape
}

// The kinds Sigil reads.
var (
	VirtualService  = Kind{Group: "networking.istio.io", Kind: "VirtualService", Resource: "virtualservices", Versions: istioVersions, Status: StatusConditions}
	DestinationRule = Kind{Group: "networking.istio.io", Kind: "DestinationRule", Resource: "destinationrules", Versions: istioVersions, Status: StatusConditions}
	Policy          = Kind{Group: "security.sigil.dev", Kind: "Policy", Resource: "policies", Versions: []string{"v1"}, Status: StatusConditions}
	HTTPRoute       = Kind{Group: GatewayGroup, Kind: "HTTPRoute", Resource: "httproutes", Versions: []string{"v1"}, Status: StatusRouteParents}
	GRPCRoute       = Kind{Group: GatewayGroup, Kind: "GRPCRoute", Resource: "grpcroutes", Versions: []string{"v1"}, Status: StatusRouteParents}
)

var istioVersions = []string{"v1", "v1beta1", "v1alpha3"}

// GatewayGroup is Gateway API's group.
const GatewayGroup = "gateway.networking.k8s.io"

// ControllerName is how Sigil names itself in a route's
// status.parents[].controllerName (Gateway API's domain/path form).
const ControllerName = "sigil.dev/mesh-controller"

// Object names one Kubernetes object of a watched kind.
type Object struct {
	Group, Kind, Namespace, Name string
}

// String is the object's reference, "Kind.group/namespace/name"
// (VirtualService.networking.istio.io/default/reviews); ParseObject
// reads it back.
func (o Object) String() string {
	return o.Kind + "." + o.Group + "/" + o.Namespace + "/" + o.Name
}

// ParseObject reads an Object's String form.
func ParseObject(s string) (Object, bool) {
	parts := strings.Split(s, "/")
	if len(parts) != 3 {
		return Object{}, false
	}
	kind, group, ok := strings.Cut(parts[0], ".")
	if !ok || kind == "" || group == "" || parts[1] == "" || parts[2] == "" {
		return Object{}, false
	}
	return Object{Group: group, Kind: kind, Namespace: parts[1], Name: parts[2]}, true
}

// Refusal is a Store's answer for an object it does not take: the
// Accepted=False condition's reason (one CamelCase word: Invalid,
// Conflict) and message (the text sigil apply prints for the same
// document, naming the field).
type Refusal struct {
	Reason, Message string
}

func (r *Refusal) Error() string { return r.Reason + ": " + r.Message }

// ParentReporter is a Store that judges an accepted route per Service
// parent, as Gateway API's status.parents does: a route may be accepted
// while a backendRef does not resolve (ResolvedRefs=False). For such a
// Store the Source writes each mesh parent's conditions as Parents gives
// them (lastTransitionTime kept while a condition's status holds),
// instead of deriving Accepted and ResolvedRefs from Apply's answer.
type ParentReporter interface {
	// Parents returns the conditions of an accepted route's parents, by
	// their index in its spec.parentRefs; a parent without an entry gets
	// the derived conditions.
	Parents(ctx context.Context, obj Object) (map[int][]metav1.Condition, error)
}
