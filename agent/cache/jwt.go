package cache

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/sigil-mesh/sigil/selector"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

type jwtCached struct {
	token          string
	issued, expiry time.Time
}

// JWTSVID is a signed JWT-SVID.
type JWTSVID struct {
	ID    spiffeid.ID
	Token string
}

// ErrNoIdentity means the workload matches no entry (or none with the
// requested SPIFFE ID).
var ErrNoIdentity = fmt.Errorf("cache: no identity for this workload")

// FetchJWTSVIDs returns a JWT-SVID for each identity the workload has
// (only want's, if set), from the cache while it is in its first half of
// life, else freshly signed by the server.
func (c *Cache) FetchJWTSVIDs(ctx context.Context, sels selector.Set, want spiffeid.ID, audience []string) ([]JWTSVID, error) {
	aud := append([]string(nil), audience...)
	sort.Strings(aud)
	c.mu.RLock()
	var ids []Identity
	for _, id := range c.ids {
		if sels.Includes(id.Selectors) && (want.IsZero() || id.ID == want) {
			ids = append(ids, *id)
		}
	}
	c.mu.RUnlock()
	if len(ids) == 0 {
		return nil, ErrNoIdentity
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i].ID.String() < ids[j].ID.String() })
	out := make([]JWTSVID, 0, len(ids))
	for _, id := range ids {
		key := id.EntryID + "|" + strings.Join(aud, "\x00")
		now := c.now()
		c.mu.RLock()
		cached, ok := c.jwts[key]
		c.mu.RUnlock()
		if ok && now.Before(cached.issued.Add(cached.expiry.Sub(cached.issued)/2)) {
			out = append(out, JWTSVID{ID: id.ID, Token: cached.token})
			continue
		}
		c.mu.RLock()
		blocked := c.blocked
		c.mu.RUnlock()
		if blocked != nil {
			return nil, fmt.Errorf("cache: jwt-svid for %s: %w", id.ID, blocked)
		}
		resp, err := c.signer.NewJWTSVID(ctx, id.EntryID, aud)
		if err != nil {
			return nil, fmt.Errorf("cache: jwt-svid for %s: %w", id.ID, err)
		}
		c.mu.Lock()
		c.jwts[key] = jwtCached{token: resp.GetToken(), issued: now, expiry: time.Unix(resp.GetExpiresAt(), 0)}
		c.mu.Unlock()
		out = append(out, JWTSVID{ID: id.ID, Token: resp.GetToken()})
	}
	return out, nil
}
