package ca

import "time"

// KindState is where one kind of authority stands in its rotation, as
// the server's metrics show it: when the active one expires, and whether
// its successor is prepared (published in the bundle, not yet signing).
type KindState struct {
	Kind     Kind
	NotAfter time.Time
	Prepared bool
}

// RotationState returns the state of each kind that has an active
// authority (no root when an upstream CA signs the intermediates), in
// the order root, intermediate, jwt.
func (c *CA) RotationState() []KindState {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []KindState
	for _, k := range []Kind{KindRoot, KindIntermediate, KindJWT} {
		a := c.find(&c.st, k, StatusActive)
		if a == nil {
			continue
		}
		out = append(out, KindState{Kind: k, NotAfter: a.NotAfter, Prepared: c.find(&c.st, k, StatusPrepared) != nil})
	}
	return out
}
