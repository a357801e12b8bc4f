package window

// ids numbers the distinct values of T (keys, sidecars) held in the
// window, so that slots refer to them by a 32-bit id, and forgets a value
// once the last slot it counted in has left the window; forgotten ids are
// reused.
type ids[T comparable] struct {
	byValue map[T]uint32
	recs    []idRec[T] // by id
	free    []uint32
}

type idRec[T comparable] struct {
	v    T
	last int64 // the newest slot number v counted in; 0: a free id
}

// id returns v's id, making one unless max values are held already, and
// notes that v counted in slot n.
func (r *ids[T]) id(v T, n int64, max int) (uint32, bool) {
	if r.byValue == nil {
		r.byValue = map[T]uint32{}
	}
	id, ok := r.byValue[v]
	if !ok {
		if len(r.byValue) >= max {
			return 0, false
		}
		if l := len(r.free); l > 0 {
			id, r.free = r.free[l-1], r.free[:l-1]
			r.recs[id] = idRec[T]{v: v}
		} else {
			id = uint32(len(r.recs))
			r.recs = append(r.recs, idRec[T]{v: v})
		}
		r.byValue[v] = id
	}
	if n > r.recs[id].last {
		r.recs[id].last = n
	}
	return id, true
}

// value returns the value numbered id.
func (r *ids[T]) value(id uint32) *T { return &r.recs[id].v }

// len returns how many values are held.
func (r *ids[T]) len() int { return len(r.byValue) }

// sweep forgets the values whose newest slot is before oldest.
func (r *ids[T]) sweep(oldest int64) {
	for id := range r.recs {
		rec := &r.recs[id]
		if rec.last != 0 && rec.last < oldest {
			delete(r.byValue, rec.v)
			*rec = idRec[T]{}
			r.free = append(r.free, uint32(id))
		}
	}
}
