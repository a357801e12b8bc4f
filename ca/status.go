package ca

import (
	"sort"
	"time"
)

// AuthorityStatus is one root, intermediate or JWT key as the dashboard
// shows the CA's rotation state. It carries no key material.
type AuthorityStatus struct {
	ID        int64     `json:"id"`
	Kind      Kind      `json:"kind"`
	Status    Status    `json:"status"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	// Upstream is set on an intermediate an upstream CA signed.
	Upstream bool `json:"upstream,omitempty"`
	// KeyID is a JWT key's "kid".
	KeyID string `json:"kid,omitempty"`
	// PrepareNextAt is when an active authority's successor is prepared
	// (half its life) and ActivateNextAt when the successor takes over
	// (five sixths); both zero for prepared and retired authorities and
	// for upstream-signed intermediates, which the upstream replaces.
	PrepareNextAt  time.Time `json:"prepare_next_at,omitzero"`
	ActivateNextAt time.Time `json:"activate_next_at,omitzero"`
}

// Authorities returns every authority the CA holds (expired ones are
// dropped at each Rotate), roots first, then intermediates, then JWT keys,
// each oldest first.
func (c *CA) Authorities() []AuthorityStatus {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]AuthorityStatus, 0, len(c.st.Authorities))
	for _, a := range c.st.Authorities {
		s := AuthorityStatus{ID: a.ID, Kind: a.Kind, Status: a.Status, NotBefore: a.NotBefore, NotAfter: a.NotAfter, Upstream: a.Upstream, KeyID: a.KeyID}
		if a.Status == StatusActive && !a.Upstream {
			s.PrepareNextAt = lifeAt(a, prepareNum, prepareDen)
			s.ActivateNextAt = lifeAt(a, activateNum, activateDen)
		}
		out = append(out, s)
	}
	order := map[Kind]int{KindRoot: 0, KindIntermediate: 1, KindJWT: 2}
	sort.SliceStable(out, func(i, j int) bool {
		if order[out[i].Kind] != order[out[j].Kind] {
			return order[out[i].Kind] < order[out[j].Kind]
		}
		return out[i].ID < out[j].ID
	})
	return out
}
