// Package cache is the agent's store of identities: the registration
// entries the server streams for this node, the X.509-SVID signed for each
// (its private key made here, never sent anywhere), cached JWT-SVIDs and the
// trust bundle. Its Run loop renews every SVID at half of its life, in
// batches, and keeps serving what it holds while the server is away.
package cache

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sigil-mesh/sigil/agent/svid"
	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/internal/backoff"
	"github.com/sigil-mesh/sigil/selector"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Signer is the part of the server's API the cache needs.
type Signer interface {
	BatchNewX509SVID(ctx context.Context, params []*agentv1.X509SVIDParams) ([]*agentv1.X509SVIDResult, error)
	NewJWTSVID(ctx context.Context, entryID string, audience []string) (*agentv1.NewJWTSVIDResponse, error)
}

// Identity is one entry and the SVID held for it.
type Identity struct {
	EntryID   string
	ID        spiffeid.ID
	Selectors []selector.Selector
	X509TTL   time.Duration
	Revision  int64
	// SVID is nil until the first signature arrives.
	SVID *x509svid.SVID

	signedRevision int64
	retryAt        time.Time
}

// Cache holds the node's identities. It is safe for concurrent use.
type Cache struct {
	signer Signer
	log    *slog.Logger
	now    func() time.Time

	mu     sync.RWMutex
	bundle *spiffebundle.Bundle
	ids    map[string]*Identity
	jwts   map[string]jwtCached
	synced bool // entries received from the server at least once
	// blocked, when set, is why nothing can be signed now (the agent's own
	// SVID expired or was refused): callers waiting for an SVID are told at
	// once instead of waiting for a signature that cannot come.
	blocked error
	ch      chan struct{} // closed and replaced on every change
	wake    chan struct{}
}

// maxBatch is how many CSRs go in one call to the server.
const maxBatch = 500

// New returns a cache that signs through signer.
func New(signer Signer, bundle *spiffebundle.Bundle, log *slog.Logger, now func() time.Time) *Cache {
	if now == nil {
		now = time.Now
	}
	return &Cache{signer: signer, log: log, now: now, bundle: bundle, ids: map[string]*Identity{}, jwts: map[string]jwtCached{}, ch: make(chan struct{}), wake: make(chan struct{}, 1)}
}

// notifyLocked wakes watchers; c.mu must be held.
func (c *Cache) notifyLocked() {
	close(c.ch)
	c.ch = make(chan struct{})
}

// Changed returns a channel closed at the next change of SVIDs, entries or
// bundle. Take it before reading, so that no change is missed.
func (c *Cache) Changed() <-chan struct{} {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.ch
}

// Bundle returns the current trust bundle.
func (c *Cache) Bundle() *spiffebundle.Bundle {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.bundle
}

// SetBundle replaces the trust bundle.
func (c *Cache) SetBundle(b *spiffebundle.Bundle) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bundle != nil && c.bundle.Equal(b) {
		return
	}
	c.bundle = b
	c.notifyLocked()
}

// SetEntries replaces the node's entries with what the server sent: new
// ones get signed, changed ones re-signed, removed ones dropped at once.
func (c *Cache) SetEntries(entries []*agentv1.Entry) error {
	next := make(map[string]*Identity, len(entries))
	for _, e := range entries {
		id, err := spiffeid.FromString(e.GetSpiffeId())
		if err != nil {
			return fmt.Errorf("cache: entry %s: %w", e.GetId(), err)
		}
		sels := make([]selector.Selector, 0, len(e.GetSelectors()))
		for _, s := range e.GetSelectors() {
			sel, err := selector.Parse(s.GetType() + ":" + s.GetValue())
			if err != nil {
				return fmt.Errorf("cache: entry %s: %w", e.GetId(), err)
			}
			sels = append(sels, sel)
		}
		next[e.GetId()] = &Identity{EntryID: e.GetId(), ID: id, Selectors: sels, X509TTL: time.Duration(e.GetX509SvidTtl()) * time.Second, Revision: e.GetRevision()}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	changed := len(next) != len(c.ids) || !c.synced
	c.synced = true
	for id, n := range next {
		old, ok := c.ids[id]
		if !ok {
			changed = true
			continue
		}
		if old.ID != n.ID || old.X509TTL != n.X509TTL || !sameSelectors(old.Selectors, n.Selectors) {
			changed = true
			continue // a changed entry starts over with a new SVID
		}
		next[id] = old
	}
	if !changed {
		return nil
	}
	c.ids = next
	for k := range c.jwts {
		if _, ok := next[strings.SplitN(k, "|", 2)[0]]; !ok {
			delete(c.jwts, k)
		}
	}
	c.notifyLocked()
	c.poke()
	return nil
}

func sameSelectors(a, b []selector.Selector) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (c *Cache) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Match returns the identities whose selectors the workload has, sorted by
// SPIFFE ID, and whether any still waits for its first SVID. Before the
// first entries arrive from the server everything is pending: "no entry"
// is only said once the cache knows the node's entries.
func (c *Cache) Match(sels selector.Set) (ids []Identity, pending bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if !c.synced {
		return nil, true
	}
	now := c.now()
	for _, id := range c.ids {
		if !sels.Includes(id.Selectors) {
			continue
		}
		// An expired SVID is never handed out: the workload waits for renewal.
		if id.SVID == nil || !now.Before(id.SVID.Certificates[0].NotAfter) {
			pending = true
			continue
		}
		ids = append(ids, *id)
	}
	sort.Slice(ids, func(i, j int) bool {
		if ids[i].ID != ids[j].ID {
			return ids[i].ID.String() < ids[j].ID.String()
		}
		return ids[i].EntryID < ids[j].EntryID
	})
	return ids, pending
}

// Len reports how many entries the cache holds and how many have an SVID.
func (c *Cache) Len() (entries, signed int) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, id := range c.ids {
		if id.SVID != nil {
			signed++
		}
	}
	return len(c.ids), signed
}

// Run renews SVIDs until ctx is done. Failed signing is retried on the
// backoff schedule, at once when SetBlocked(nil) says signing works again.
func (c *Cache) Run(ctx context.Context) {
	var b backoff.Backoff
	for {
		due, next := c.due()
		if len(due) > 0 {
			if err := c.sign(ctx, due); err != nil {
				c.log.Warn("svid signing failed; keeping the SVIDs held and retrying", "error", err)
				if !b.Wait(ctx, c.wake) {
					return
				}
				continue
			}
			b.Reset()
			continue
		}
		wait := time.Minute
		if !next.IsZero() {
			wait = max(next.Sub(c.now()), 10*time.Millisecond)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-c.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// SetBlocked records why the cache cannot have SVIDs signed now (nil: it
// can again, and signing is retried at once). While blocked, a workload
// whose SVID is missing or expired is told why at once (Unavailable) rather
// than kept waiting; the SVIDs held stay served until they expire.
func (c *Cache) SetBlocked(reason error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if (c.blocked == nil) == (reason == nil) {
		c.blocked = reason
		return
	}
	c.blocked = reason
	c.notifyLocked()
	if reason == nil {
		c.poke()
	}
}

// Unsynced forgets that the node's entries are known, as after a
// re-attestation that follows an eviction (which dropped them): until the
// server's next snapshot arrives, a caller waits for it, bounded, rather
// than being told it has no identity.
func (c *Cache) Unsynced() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.synced = false
}

// Unavailable says why a workload with these selectors cannot be given an
// X.509-SVID now, or nil when it can, or soon will (its first SVID is being
// signed). Call it when Match reports pending identities: an expired SVID,
// or any missing one while blocked, is an answer to give at once.
func (c *Cache) Unavailable(sels selector.Set) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	now := c.now()
	for _, id := range c.ids {
		if !sels.Includes(id.Selectors) {
			continue
		}
		switch {
		case id.SVID != nil && !now.Before(id.SVID.Certificates[0].NotAfter):
			why := "the server has not renewed it"
			if c.blocked != nil {
				why = c.blocked.Error()
			}
			return fmt.Errorf("cache: the X509-SVID of %s expired at %s: %s", id.ID, id.SVID.Certificates[0].NotAfter.UTC().Format(time.RFC3339), why)
		case id.SVID == nil && c.blocked != nil:
			return fmt.Errorf("cache: no X509-SVID for %s yet: %w", id.ID, c.blocked)
		}
	}
	return nil
}

// due returns the entries to sign now and when the next one falls due.
func (c *Cache) due() ([]Identity, time.Time) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	now := c.now()
	var out []Identity
	var next time.Time
	for _, id := range c.ids {
		at := now
		if id.SVID != nil && id.signedRevision == id.Revision {
			leaf := id.SVID.Certificates[0]
			at = leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
		}
		if id.retryAt.After(at) {
			at = id.retryAt
		}
		if !at.After(now) {
			out = append(out, *id)
			continue
		}
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return out, next
}

// sign makes a key and CSR for each identity and has the server sign them.
func (c *Cache) sign(ctx context.Context, ids []Identity) error {
	for start := 0; start < len(ids); start += maxBatch {
		batch := ids[start:min(start+maxBatch, len(ids))]
		keys := make([]*ecdsa.PrivateKey, len(batch))
		params := make([]*agentv1.X509SVIDParams, len(batch))
		for i, id := range batch {
			key, csr, err := svid.NewKeyAndCSR()
			if err != nil {
				return fmt.Errorf("cache: %w", err)
			}
			keys[i], params[i] = key, &agentv1.X509SVIDParams{EntryId: id.EntryID, Csr: csr}
		}
		callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		results, err := c.signer.BatchNewX509SVID(callCtx, params)
		cancel()
		if err != nil {
			return fmt.Errorf("cache: batch of %d: %w", len(batch), err)
		}
		if len(results) != len(batch) {
			return fmt.Errorf("cache: server answered %d of %d CSRs", len(results), len(batch))
		}
		c.store(batch, keys, results)
	}
	return nil
}

func (c *Cache) store(batch []Identity, keys []*ecdsa.PrivateKey, results []*agentv1.X509SVIDResult) {
	c.mu.Lock()
	defer c.mu.Unlock()
	bundle := c.bundle
	updated := false
	for i, res := range results {
		cur, ok := c.ids[batch[i].EntryID]
		if !ok || res.GetEntryId() != batch[i].EntryID {
			continue // removed meanwhile
		}
		signed, err := c.check(batch[i], keys[i], res, bundle)
		if err != nil {
			c.log.Warn("svid refused", "entry_id", batch[i].EntryID, "spiffe_id", batch[i].ID.String(), "error", err)
			// A refused SVID is the server's mistake, not an outage: it
			// is asked again after the schedule's longest wait, not sooner.
			cur.retryAt = c.now().Add(backoff.Max)
			continue
		}
		cur.SVID, cur.signedRevision, cur.retryAt = signed, batch[i].Revision, time.Time{}
		updated = true
		c.log.Debug("svid updated", "spiffe_id", signed.ID.String(), "not_after", signed.Certificates[0].NotAfter)
	}
	if updated {
		c.notifyLocked()
	}
}

// check verifies what the server sent before any workload sees it: the
// chain against the bundle, and the ID against the entry.
func (c *Cache) check(id Identity, key *ecdsa.PrivateKey, res *agentv1.X509SVIDResult, bundle *spiffebundle.Bundle) (*x509svid.SVID, error) {
	if res.GetError() != "" {
		return nil, fmt.Errorf("cache: server: %s", res.GetError())
	}
	s, err := svid.VerifyChain(res.GetSvid().GetCertChain(), key, bundle.X509Bundle(), c.now(), svid.Exactly(id.ID))
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	return s, nil
}
