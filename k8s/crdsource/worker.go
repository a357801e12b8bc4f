package crdsource

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// next processes one queued object; false once the queue is shut down.
func (s *Source) next(ctx context.Context) bool {
	k, quit := s.queue.Get()
	if quit {
		return false
	}
	defer s.queue.Done(k)
	s.settle(ctx, k, s.process(ctx, k))
	return true
}

// settle ends the processing of k, which err ended: retried with backoff
// when it failed (but for ctx ending), forgotten when not.
func (s *Source) settle(ctx context.Context, k key, err error) {
	if err == nil {
		s.queue.Forget(k)
		return
	}
	if ctx.Err() != nil {
		return
	}
	s.o.Log.Warn("kubernetes configuration: object not mirrored; retried with backoff", "object", s.object(k).String(), "error", err)
	s.queue.AddRateLimited(k)
}

func (s *Source) object(k key) Object {
	kind := s.o.Kinds[k.kind]
	return Object{Group: kind.Group, Kind: kind.Kind, Namespace: k.namespace, Name: k.name}
}

// cached returns the informer's copy of k's object.
func (s *Source) cached(k key) (*unstructured.Unstructured, bool) {
	s.mu.Lock()
	w := s.watching[k.kind]
	s.mu.Unlock()
	if w == nil {
		return nil, false
	}
	item, ok, err := w.informer.GetStore().GetByKey(k.namespace + "/" + k.name)
	if err != nil || !ok {
		return nil, false
	}
	u, ok := item.(*unstructured.Unstructured)
	return u, ok
}

// process mirrors one object: applied when Kubernetes has it, deleted
// when not; then its status says what became of it.
func (s *Source) process(ctx context.Context, k key) error {
	obj := s.object(k)
	u, ok := s.cached(k)
	kind := s.o.Kinds[k.kind]
	if ok && kind.Status == StatusRouteParents && len(meshParents(u)) == 0 {
		ok = false // a route of a Gateway, not of the mesh: not Sigil's
	}
	if !ok {
		if s.pending(k.kind) {
			return nil // not served yet: the rescan that watches it looks again
		}
		if err := s.o.Store.Delete(ctx, obj); err != nil {
			return err
		}
		s.mu.Lock()
		_, had := s.answers[k]
		delete(s.answers, k)
		s.mu.Unlock()
		if had {
			s.o.Log.Info("kubernetes configuration: object removed", "object", obj.String())
			s.queueRefused()
		}
		return nil
	}
	a := answer{uid: string(u.GetUID()), generation: u.GetGeneration()}
	s.mu.Lock()
	prev, seen := s.answers[k]
	a.epoch = s.epoch
	s.mu.Unlock()
	// An accepted generation is not applied again (a resync, or the
	// update our own status write causes); a refused one is once the
	// epoch moved, since a change elsewhere may have resolved it.
	if !seen || prev.uid != a.uid || prev.generation != a.generation || (prev.refusal != nil && prev.epoch != a.epoch) {
		doc, err := document(u)
		if err != nil {
			return err
		}
		err = s.o.Store.Apply(ctx, obj, doc)
		if err = s.answered(k, a, err); err != nil {
			return err
		}
		if a = s.answerOf(k); a.refusal == nil {
			s.queueRefused()
		}
	} else {
		a = prev
	}
	return s.writeStatus(ctx, k, u, a)
}

// answered records the Store's answer err to a's generation of k's
// object: nil or a *Refusal; any other error is returned, recording
// nothing.
func (s *Source) answered(k key, a answer, err error) error {
	var refusal *Refusal
	switch {
	case errors.As(err, &refusal):
		a.refusal = refusal
	case err != nil:
		return err
	}
	obj := s.object(k)
	s.mu.Lock()
	prev, seen := s.answers[k]
	if seen && prev.uid == a.uid && prev.generation == a.generation && sameRefusal(prev.refusal, a.refusal) {
		a.wrote, a.wroteOver = prev.wrote, prev.wroteOver
	}
	s.answers[k] = a
	s.mu.Unlock()
	if a.refusal != nil {
		s.o.Log.Warn("kubernetes configuration: object refused", "object", obj.String(), "reason", refusal.Reason, "error", refusal.Message)
	} else {
		s.o.Log.Info("kubernetes configuration: object accepted", "object", obj.String())
	}
	return nil
}

func (s *Source) answerOf(k key) answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.answers[k]
}

func sameRefusal(a, b *Refusal) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// document is what the Store reads of an object: the parts a user
// writes (apiVersion, kind, name, namespace, spec). The rest of
// metadata and the status are Kubernetes' and controllers'.
func document(u *unstructured.Unstructured) ([]byte, error) {
	doc := map[string]any{
		"apiVersion": u.GetAPIVersion(),
		"kind":       u.GetKind(),
		"metadata":   map[string]any{"name": u.GetName(), "namespace": u.GetNamespace()},
	}
	if spec, ok := u.Object["spec"]; ok {
		doc["spec"] = spec
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("crdsource: encoding %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	return b, nil
}
