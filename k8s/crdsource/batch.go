package crdsource

import (
	"context"
	"errors"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// BatchStore is a Store that also applies many objects in one write.
// The Source uses it for the objects present at start: applied one at a
// time, n objects cost n checks of a configuration growing to n (n
// Gateway API routes of one Service, n translations of up to n routes).
type BatchStore interface {
	Store
	// ApplyAll applies the objects' documents (as Apply takes them).
	// Those refused on their own (the document alone is wrong) are in
	// refused, by index, with the refusal Apply would give, and are not
	// applied. The others are applied in one write, all or none: a
	// *Refusal err refuses them all without saying which is at fault,
	// and the Source then splits them. Any other error is retried per
	// object, with backoff.
	ApplyAll(ctx context.Context, objs []Object, docs [][]byte) (refused map[int]*Refusal, err error)
}

// batched is one object of a batch: its key, cached copy and document,
// and what the Store answered (err: nil, a *Refusal, or a failure).
type batched struct {
	k   key
	u   *unstructured.Unstructured
	doc []byte
	err error
}

// syncAll mirrors every queued object, as the worker would one by one,
// but applies those never answered in batches through a BatchStore: one
// write when every object is accepted; a refused batch is split in two
// halves, applied in order, down to single objects, so each object
// still gets its own answer (and status condition), a bad one never
// blocks the others, and k bad objects among n cost about 2k log n
// writes instead of n (none for a document refused on its own, which
// ApplyAll names). Conflicts between objects resolve as in the
// queue's order: the earlier is applied first.
func (s *Source) syncAll(ctx context.Context) {
	bs, ok := s.o.Store.(BatchStore)
	if !ok {
		for s.queue.Len() > 0 {
			s.next(ctx)
		}
		return
	}
	var batch []*batched
	var rest []key
	for s.queue.Len() > 0 {
		k, quit := s.queue.Get()
		if quit {
			return
		}
		b, ok := s.batchable(k)
		if !ok {
			rest = append(rest, k)
			continue
		}
		batch = append(batch, b)
	}
	s.applyBatch(ctx, bs, batch)
	accepted := false
	for _, b := range batch {
		err := b.err
		var refusal *Refusal
		if err == nil || errors.As(err, &refusal) {
			if err = s.answered(b.k, answer{uid: string(b.u.GetUID()), generation: b.u.GetGeneration(), epoch: s.epochNow()}, err); err == nil {
				a := s.answerOf(b.k)
				accepted = accepted || a.refusal == nil
				err = s.writeStatus(ctx, b.k, b.u, a)
			}
		}
		s.settle(ctx, b.k, err)
		s.queue.Done(b.k)
	}
	if accepted {
		s.queueRefused()
	}
	for _, k := range rest {
		s.settle(ctx, k, s.process(ctx, k))
		s.queue.Done(k)
	}
	// What the writes queued again (refused objects of a new epoch, the
	// status writes' own updates) goes the worker's way.
	for s.queue.Len() > 0 {
		s.next(ctx)
	}
}

// batchable returns k's object for a batch: one this Source never
// answered, that Kubernetes has and that is the mesh's. The others
// (deleted, pending, answered before) take process's path.
func (s *Source) batchable(k key) (*batched, bool) {
	u, ok := s.cached(k)
	if !ok || (s.o.Kinds[k.kind].Status == StatusRouteParents && len(meshParents(u)) == 0) {
		return nil, false
	}
	s.mu.Lock()
	_, seen := s.answers[k]
	s.mu.Unlock()
	if seen {
		return nil, false
	}
	doc, err := document(u)
	if err != nil {
		return nil, false
	}
	return &batched{k: k, u: u, doc: doc}, true
}

func (s *Source) epochNow() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.epoch
}

// applyBatch applies bs's objects, setting each one's err: the whole
// batch in one ApplyAll, split in halves when refused; a single object
// through Apply, whose refusal is its own.
func (s *Source) applyBatch(ctx context.Context, bs BatchStore, batch []*batched) {
	switch len(batch) {
	case 0:
		return
	case 1:
		b := batch[0]
		b.err = bs.Apply(ctx, s.object(b.k), b.doc)
		return
	}
	objs, docs := make([]Object, len(batch)), make([][]byte, len(batch))
	for i, b := range batch {
		objs[i], docs[i] = s.object(b.k), b.doc
	}
	refused, err := bs.ApplyAll(ctx, objs, docs)
	var rest []*batched
	for i, b := range batch {
		if r, ok := refused[i]; ok {
			b.err = r
			continue
		}
		rest = append(rest, b)
	}
	var refusal *Refusal
	if errors.As(err, &refusal) {
		half := len(rest) / 2
		s.applyBatch(ctx, bs, rest[:half])
		s.applyBatch(ctx, bs, rest[half:])
		return
	}
	for _, b := range rest {
		b.err = err
	}
}
