package ca

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/sigil-mesh/sigil/audit"
)

// Fractions of an active authority's life at which Rotate prepares its
// successor and hands over to it.
const (
	prepareNum, prepareDen   = 1, 2
	activateNum, activateDen = 5, 6
)

// lifeAt is the moment num/den of a's life has passed.
func lifeAt(a *authority, num, den int64) time.Time {
	life := a.NotAfter.Sub(a.NotBefore)
	return a.NotBefore.Add(time.Duration(int64(life) / den * num))
}

// due reports whether now is past the given fraction of a's life.
func due(a *authority, now time.Time, num, den int64) bool {
	return !now.Before(lifeAt(a, num, den))
}

// Rotate brings the CA's authorities up to date for the current time:
// prepares, activates and retires roots, intermediates and JWT keys. It
// reports whether the trust bundle changed. It is safe to call often.
func (c *CA) Rotate(ctx context.Context) (bool, error) {
	c.saveMu.Lock()
	defer c.saveMu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.Now()
	next := c.st
	next.Authorities = append([]*authority(nil), c.st.Authorities...)
	var events []audit.Event
	var removed []string
	bundleChanged := false

	// Drop what has expired: it can no longer verify or sign anything.
	kept := next.Authorities[:0]
	for _, a := range next.Authorities {
		if !now.Before(a.NotAfter) {
			if a.Kind != KindIntermediate {
				bundleChanged = true
			}
			if a.KeyRef != "" {
				removed = append(removed, a.KeyRef)
			}
			continue
		}
		kept = append(kept, a)
	}
	next.Authorities = kept

	step := func(kind Kind, make func(*state) (*authority, error)) error {
		active, prepared := c.find(&next, kind, StatusActive), c.find(&next, kind, StatusPrepared)
		switch {
		case active == nil && prepared != nil:
			c.setStatus(&next, prepared, StatusActive)
			events = append(events, activated(kind, prepared))
		case active == nil:
			a, err := make(&next)
			if err != nil {
				return err
			}
			a.Status = StatusActive
			c.add(&next, a)
			events = append(events, prepared2(kind, a), activated(kind, a))
			bundleChanged = bundleChanged || kind != KindIntermediate
		case prepared != nil && due(active, now, activateNum, activateDen):
			c.setStatus(&next, active, StatusRetired)
			c.setStatus(&next, prepared, StatusActive)
			events = append(events, activated(kind, prepared))
		case prepared == nil && due(active, now, prepareNum, prepareDen) && !active.Upstream:
			a, err := make(&next)
			if err != nil {
				return err
			}
			a.Status = StatusPrepared
			c.add(&next, a)
			events = append(events, prepared2(kind, a))
			bundleChanged = bundleChanged || kind != KindIntermediate
		}
		return nil
	}
	if err := step(KindRoot, c.makeRoot); err != nil {
		return false, err
	}
	if err := step(KindIntermediate, c.makeIntermediate); err != nil {
		return false, err
	}
	if err := step(KindJWT, c.makeJWTKey); err != nil {
		return false, err
	}
	if len(events) == 0 && !bundleChanged && len(removed) == 0 {
		return false, nil
	}
	if bundleChanged {
		next.Sequence++
	}
	raw, err := json.Marshal(&next)
	if err != nil {
		return false, fmt.Errorf("ca: encoding state: %w", err)
	}
	intent, err := c.cfg.Audit.Begin(events...)
	if err != nil {
		return false, fmt.Errorf("ca: rotation not recorded: %w", err)
	}
	err = c.cfg.State.SaveCAState(ctx, raw)
	if serr := intent.Settle(err); serr != nil {
		c.log.Error("ca: rotation outcome not recorded; reconciled at the next start", "error", serr)
	}
	if err != nil {
		// On a conflict nothing was saved: the keys made for this state
		// are dropped. On any other error the save may have happened, so
		// they stay.
		for _, a := range next.Authorities {
			if errors.Is(err, ErrStateConflict) && a.KeyRef != "" && !c.holds(a) {
				_ = c.keys.RemoveKey(a.KeyRef)
			}
		}
		return false, fmt.Errorf("ca: saving state: %w", err)
	}
	c.st = next
	for _, ref := range removed {
		if err := c.keys.RemoveKey(ref); err != nil {
			c.log.Warn("ca: expired key not removed", "error", err)
		}
	}
	for _, e := range events {
		c.log.Info("ca rotation", "event", e.Type, "authority", e.Details["id"], "not_after", e.Details["not_after"])
	}
	return bundleChanged, nil
}

// holds says whether the state in force has an authority with a's key.
func (c *CA) holds(a *authority) bool {
	for _, x := range c.st.Authorities {
		if x.KeyRef == a.KeyRef {
			return true
		}
	}
	return false
}

// setStatus replaces a in st with a copy of a in the new status, so the
// state in force is never changed before the new one is saved.
func (c *CA) setStatus(st *state, a *authority, s Status) {
	for i, x := range st.Authorities {
		if x == a {
			cp := *a
			cp.Status = s
			st.Authorities[i] = &cp
		}
	}
}

func (c *CA) add(st *state, a *authority) {
	st.NextID++
	a.ID = st.NextID
	st.Authorities = append(st.Authorities, a)
}

func prepared2(kind Kind, a *authority) audit.Event {
	t := audit.CAPrepared
	switch kind {
	case KindRoot:
		t = audit.CARootCreated
	case KindJWT:
		t = audit.JWTKeyPrepared
	}
	return audit.Event{Type: t, Actor: "ca", Details: authDetails(kind, a)}
}

func activated(kind Kind, a *authority) audit.Event {
	t := audit.CAActivated
	if kind == KindJWT {
		t = audit.JWTKeyActivated
	}
	return audit.Event{Type: t, Actor: "ca", Details: authDetails(kind, a)}
}

func authDetails(kind Kind, a *authority) map[string]string {
	d := map[string]string{"kind": string(kind), "id": strconv.FormatInt(a.ID+0, 10), "not_after": a.NotAfter.UTC().Format(time.RFC3339)}
	if a.cert != nil {
		d["serial"] = a.cert.SerialNumber.Text(16)
	}
	if a.KeyID != "" {
		d["kid"] = a.KeyID
	}
	return d
}
