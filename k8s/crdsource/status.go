package crdsource

import (
	"context"
	"fmt"
	"reflect"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Condition types and reasons Sigil writes.
const (
	// ConditionAccepted says whether Sigil serves the object (Gateway
	// API's and Istio's name for it).
	ConditionAccepted = "Accepted"
	// ConditionResolvedRefs is Gateway API's second route condition.
	ConditionResolvedRefs = "ResolvedRefs"
	// ReasonAccepted is an accepted object's reason.
	ReasonAccepted = "Accepted"
	// ReasonResolvedRefs is the reason of ResolvedRefs=True.
	ReasonResolvedRefs = "ResolvedRefs"
)

// acceptedMessage is an accepted object's message.
const acceptedMessage = "accepted by sigil-server and streamed to the sidecars"

// routeRefReasons are Gateway API's reasons of ResolvedRefs=False: a
// refusal with one of them is reported on ResolvedRefs too.
var routeRefReasons = map[string]bool{"RefNotPermitted": true, "InvalidKind": true, "BackendNotFound": true, "UnsupportedProtocol": true}

// writeStatus writes a's answer into u's status through the status
// subresource, when this replica is the leader and the status does not
// already say it (so a resync, or another replica's identical write,
// costs nothing).
func (s *Source) writeStatus(ctx context.Context, k key, u *unstructured.Unstructured, a answer) error {
	if !s.o.IsLeader() {
		return nil
	}
	s.mu.Lock()
	w := s.watching[k.kind]
	s.mu.Unlock()
	if w == nil || !w.hasStatus || (a.wrote && a.wroteOver == u.GetResourceVersion()) {
		return nil
	}
	old, _, _ := unstructured.NestedMap(u.Object, "status")
	now := s.o.Now()
	var status map[string]any
	switch s.o.Kinds[k.kind].Status {
	case StatusRouteParents:
		var reported map[int][]metav1.Condition
		if pr, ok := s.o.Store.(ParentReporter); ok && a.refusal == nil {
			var err error
			if reported, err = pr.Parents(ctx, s.object(k)); err != nil {
				return err
			}
		}
		status = routeStatus(old, meshParents(u), a, reported, now)
	default:
		status = conditionsStatus(old, a, now)
	}
	if reflect.DeepEqual(old, status) {
		return nil
	}
	out := u.DeepCopy()
	out.Object["status"] = status
	_, err := s.o.Dynamic.Resource(w.gvr).Namespace(u.GetNamespace()).UpdateStatus(ctx, out, metav1.UpdateOptions{FieldManager: "sigil-server"})
	switch {
	case apierrors.IsNotFound(err):
		return nil // deleted meanwhile: its delete event is queued
	case err != nil:
		// A conflict means a newer copy is on its way to the informer,
		// queued again; retrying with backoff covers the rest.
		return fmt.Errorf("crdsource: writing the status of %s: %w", s.object(k), err)
	}
	s.mu.Lock()
	if cur, ok := s.answers[k]; ok && cur.uid == a.uid && cur.generation == a.generation {
		cur.wrote, cur.wroteOver = true, u.GetResourceVersion()
		s.answers[k] = cur
	}
	s.mu.Unlock()
	return nil
}

// condition is a's Accepted condition (metav1.Condition's fields, which
// Istio's IstioCondition shares).
func condition(typ string, a answer, now time.Time) map[string]any {
	c := map[string]any{
		"type":               typ,
		"status":             string(metav1.ConditionTrue),
		"reason":             ReasonAccepted,
		"message":            acceptedMessage,
		"observedGeneration": a.generation,
		"lastTransitionTime": now.UTC().Format(time.RFC3339),
	}
	if a.refusal != nil {
		c["status"], c["reason"], c["message"] = string(metav1.ConditionFalse), a.refusal.Reason, a.refusal.Message
	}
	return c
}

// setCondition returns conds with c in place of the condition of its
// type. The transition time stays when the status did not change, so an
// unchanged answer leaves the list as it was.
func setCondition(conds []any, c map[string]any) []any {
	out := make([]any, 0, len(conds)+1)
	placed := false
	for _, x := range conds {
		m, ok := x.(map[string]any)
		if !ok || m["type"] != c["type"] {
			out = append(out, x)
			continue
		}
		if m["status"] == c["status"] {
			if t, ok := m["lastTransitionTime"]; ok {
				c["lastTransitionTime"] = t
			}
		}
		if !placed {
			out = append(out, c)
			placed = true
		}
	}
	if !placed {
		out = append(out, c)
	}
	return out
}

// conditionsStatus is the status of StatusConditions: old with the
// Accepted condition set and observedGeneration moved to a's.
func conditionsStatus(old map[string]any, a answer, now time.Time) map[string]any {
	status := map[string]any{}
	for k, v := range old {
		status[k] = v
	}
	conds, _ := old["conditions"].([]any)
	status["conditions"] = setCondition(conds, condition(ConditionAccepted, a, now))
	status["observedGeneration"] = a.generation
	return status
}

// meshParent is a parentRef that attaches a route to a Service (GAMMA),
// with its index in spec.parentRefs.
type meshParent struct {
	index int
	ref   map[string]any
}

// meshParents are a route's parentRefs that attach it to a Service: the
// ones Sigil answers for.
func meshParents(u *unstructured.Unstructured) []meshParent {
	refs, _, _ := unstructured.NestedSlice(u.Object, "spec", "parentRefs")
	var out []meshParent
	for i, r := range refs {
		m, ok := r.(map[string]any)
		if !ok {
			continue
		}
		group, _ := m["group"].(string)
		kind, _ := m["kind"].(string)
		if kind == "Service" && (group == "" || group == "core") {
			out = append(out, meshParent{index: i, ref: m})
		}
	}
	return out
}

// routeStatus is the status of StatusRouteParents: old's parents of
// other controllers kept, and one of Sigil's per mesh parent, with the
// conditions reported for it or else derived from a.
func routeStatus(old map[string]any, parents []meshParent, a answer, reported map[int][]metav1.Condition, now time.Time) map[string]any {
	status := map[string]any{}
	for k, v := range old {
		status[k] = v
	}
	prev, _ := old["parents"].([]any)
	var out []any
	mine := map[int]map[string]any{}
	for _, p := range prev {
		m, ok := p.(map[string]any)
		if !ok || m["controllerName"] != ControllerName {
			out = append(out, p)
			continue
		}
		for _, mp := range parents {
			if reflect.DeepEqual(m["parentRef"], mp.ref) {
				mine[mp.index] = m
			}
		}
	}
	for _, mp := range parents {
		var conds []any
		if m := mine[mp.index]; m != nil {
			conds, _ = m["conditions"].([]any)
		}
		if rc, ok := reported[mp.index]; ok {
			for _, c := range rc {
				conds = setCondition(conds, map[string]any{
					"type": c.Type, "status": string(c.Status), "reason": c.Reason, "message": c.Message,
					"observedGeneration": a.generation, "lastTransitionTime": now.UTC().Format(time.RFC3339),
				})
			}
		} else {
			conds = derivedRouteConditions(conds, a, now)
		}
		out = append(out, map[string]any{"parentRef": mp.ref, "controllerName": ControllerName, "conditions": conds})
	}
	status["parents"] = out
	return status
}

// derivedRouteConditions sets Accepted from a, and ResolvedRefs: False
// with the refusal's reason when it is one of ResolvedRefs' reasons,
// else True.
func derivedRouteConditions(conds []any, a answer, now time.Time) []any {
	ac := condition(ConditionAccepted, a, now)
	if a.refusal != nil && a.refusal.Reason == "Invalid" {
		// Gateway API's reason for a route it cannot take as written.
		ac["reason"] = "UnsupportedValue"
	}
	conds = setCondition(conds, ac)
	resolved := answer{generation: a.generation}
	if a.refusal != nil && routeRefReasons[a.refusal.Reason] {
		resolved.refusal = a.refusal
	}
	rc := condition(ConditionResolvedRefs, resolved, now)
	if resolved.refusal == nil {
		rc["reason"], rc["message"] = ReasonResolvedRefs, "every reference resolved"
	}
	return setCondition(conds, rc)
}
