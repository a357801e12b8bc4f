package server

import (
	"crypto/x509"
	"sort"
	"sync"
	"time"
)

// issuedSVIDs keeps, in memory, the newest workload X.509-SVID this
// server process handed each (SPIFFE ID, agent) pair: what the
// dashboard's identities view shows. A restart starts it empty (agents
// renew at half-life, so it fills again within one TTL). Keys never enter
// it: only the serial and the validity.
type issuedSVIDs struct {
	mu sync.Mutex
	m  map[issuedKey]issuedSVID
}

type issuedKey struct{ id, agent string }

type issuedSVID struct {
	serial   string
	issuedAt time.Time
	notAfter time.Time
}

// issuedKeep is how long an expired SVID stays listed: long enough to see
// that a workload stopped renewing, short enough that the map stays the
// size of what is live.
const issuedKeep = time.Hour

// record notes leaf as the newest SVID for id through agent.
func (t *issuedSVIDs) record(id, agent string, leaf *x509.Certificate, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[issuedKey]issuedSVID{}
	}
	k := issuedKey{id, agent}
	if old, ok := t.m[k]; ok && old.notAfter.After(leaf.NotAfter) {
		return
	}
	t.m[k] = issuedSVID{serial: leaf.SerialNumber.Text(16), issuedAt: now, notAfter: leaf.NotAfter}
}

// issuedRecord is one entry of issuedSVIDs.list.
type issuedRecord struct {
	issuedKey
	issuedSVID
}

// list returns the SVIDs not expired longer than issuedKeep before now,
// soonest expiry first, and forgets the others.
func (t *issuedSVIDs) list(now time.Time) []issuedRecord {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]issuedRecord, 0, len(t.m))
	for k, v := range t.m {
		if now.Sub(v.notAfter) > issuedKeep {
			delete(t.m, k)
			continue
		}
		out = append(out, issuedRecord{k, v})
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].notAfter.Equal(out[j].notAfter) {
			return out[i].notAfter.Before(out[j].notAfter)
		}
		return out[i].id < out[j].id
	})
	return out
}
