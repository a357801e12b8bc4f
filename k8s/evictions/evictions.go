// Package evictions keeps the agent evictions of a Kubernetes server in one
// ConfigMap, so that `sigil-server agent evict` on any replica holds on
// every replica and across restarts.
//
// Each replica keeps its own SQLite registry (docs/kubernetes.md, "High
// availability"), and a replica that does not know an agent adopts it on
// its SVID. An eviction therefore has to be shared: it is one data key of
// the ConfigMap (DefaultName) in the server's namespace, named by Key
// (the SHA-256 of the agent ID in hex, since SPIFFE IDs hold characters a
// ConfigMap key may not) and holding an Eviction as JSON. Writes are
// read-modify-write against the ConfigMap's resourceVersion, retried on a
// conflict up to maxAttempts times, so two replicas evicting at once both
// land. Every replica follows the ConfigMap with an informer limited to it
// by name (Watch) and answers Lookup from what it last read; Fetch reads
// one agent's entry from the API server itself, for the leader before it
// signs (a watch may lag).
//
// An entry with Banned set is a ban (spire-server agent ban): it is never
// pruned, a later eviction keeps it, and only Unban lifts it. A time more
// than MaxFuture ahead of the reader's clock is read as now.
//
// An eviction matters only while an SVID issued at or before it can still
// be valid: Prune drops the older ones, which bounds the ConfigMap by the
// evictions made within one agent SVID lifetime. A write that would grow
// it past MaxBytes is refused with ErrFull.
//
// Typical use:
//
//	store := evictions.New(clients.Core, ns, evictions.DefaultName)
//	done, err := store.Watch(ctx, func(fresh []evictions.Eviction) { ... }, func(bad error) { ... })
//	err = store.Record(ctx, evictions.Eviction{Agent: id, At: now, Replica: pod, Until: until})
//	if e, ok := store.Lookup(id); ok && (e.Banned || !leaf.NotBefore.After(e.At)) { refuse }
//	e, ok, err := store.Fetch(ctx, id, now) // before signing; err: refuse
package evictions

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
)

// DefaultName is the ConfigMap's name, in the server's --k8s-namespace.
const DefaultName = "sigil-agent-evictions"

// MaxBytes bounds the ConfigMap's data (keys plus values). The API server
// refuses a ConfigMap over 1 MiB; this leaves room for its metadata and
// refuses a new eviction clearly before that. An entry takes about 300
// bytes, so it holds some 2,500 evictions made within one agent SVID
// lifetime (Prune drops older ones).
const MaxBytes = 768 << 10

// maxAttempts bounds the read-modify-write retries on a conflict.
const maxAttempts = 5

// MaxFuture is how far past now an eviction's time is believed: a later
// one (a hand edit, or an evicting replica whose clock runs far ahead)
// would refuse the agent forever and never be pruned, so it is read as
// made now (it still holds: fail closed) and Prune rewrites it so.
const MaxFuture = time.Minute

// ErrFull is the error of a write that would grow the ConfigMap past
// MaxBytes.
var ErrFull = errors.New("evictions: the ConfigMap would exceed its size limit")

// ErrNotBanned is Unban's error for an agent that is not banned.
var ErrNotBanned = errors.New("evictions: the agent is not banned")

// ErrFuture marks an entry dated more than MaxFuture past now: it is kept,
// read as made now.
var ErrFuture = errors.New("evictions: evicted_at is in the future; read as now")

// Eviction is one agent's eviction: no SVID of Agent issued at or before
// At is accepted by any replica.
type Eviction struct {
	// Agent is the agent's SPIFFE ID.
	Agent string `json:"agent"`
	// At is when the agent was evicted (RFC 3339 with sub-second
	// precision in the ConfigMap).
	At time.Time `json:"evicted_at"`
	// Replica names the server replica (pod) that evicted it.
	Replica string `json:"replica"`
	// Until is when the last SVID issued at or before At expires at the
	// latest, as the evicting replica computed it; Prune keeps the entry
	// at least until then.
	Until time.Time `json:"until"`
	// Banned keeps the agent out until Unban: no SVID is issued to it,
	// whatever it attests with, and Prune keeps the entry (spire-server's
	// agent ban).
	Banned bool `json:"banned,omitempty"`
}

// Key is the ConfigMap data key of agent's eviction: the hex SHA-256 of
// the agent ID, which matches the key syntax [-._a-zA-Z0-9]+ whatever the
// ID holds.
func Key(agent string) string {
	sum := sha256.Sum256([]byte(agent))
	return hex.EncodeToString(sum[:])
}

// Store is the evictions ConfigMap: writes go to the API server, Lookup
// reads what Watch last saw. Its methods are safe for concurrent use.
type Store struct {
	client kubernetes.Interface
	maps   corev1client.ConfigMapInterface
	name   string
	now    func() time.Time // Watch's clock, for entries dated in the future

	mu     sync.RWMutex
	byID   map[string]Eviction // agent ID → eviction, as last watched
	bytes  int                 // the ConfigMap's data size, as last watched
	synced func() bool         // the informer's HasSynced; nil before Watch
}

// New returns the store of the ConfigMap namespace/name. It reads nothing
// until Watch.
func New(client kubernetes.Interface, namespace, name string) *Store {
	return &Store{client: client, maps: client.CoreV1().ConfigMaps(namespace), name: name, now: time.Now, byID: map[string]Eviction{}}
}

// Name is the ConfigMap's name.
func (s *Store) Name() string { return s.name }

// Record writes e, keeping the later of e and an eviction of the same
// agent already there. It returns once the API server holds it, or an
// error: ErrFull, a conflict that outlasted the retries, or the API
// server's own (the ConfigMap not writable).
func (s *Store) Record(ctx context.Context, e Eviction) error {
	if e.Agent == "" || e.At.IsZero() {
		return errors.New("evictions: an eviction needs an agent ID and a time")
	}
	key := Key(e.Agent)
	return s.mutate(ctx, func(data map[string]string) bool {
		old, err := decode(key, data[key], e.At)
		if (err == nil || errors.Is(err, ErrFuture)) && old.Agent == e.Agent {
			if !old.At.Before(e.At) && (old.Banned || !e.Banned) {
				return false
			}
			// A later eviction does not lift a ban; a ban keeps
			// the later time.
			e.Banned = e.Banned || old.Banned
			if old.At.After(e.At) {
				e.At, e.Replica = old.At, old.Replica
			}
			if old.Until.After(e.Until) {
				e.Until = old.Until
			}
		}
		data[key] = encode(e)
		return true
	})
}

// Unban lifts agent's ban (Record with Banned set it). The entry stays as
// a plain eviction, so the SVIDs issued before the ban stay refused, and
// Prune drops it once none can be valid. It returns ErrNotBanned when the
// agent is not banned, or Record's errors.
func (s *Store) Unban(ctx context.Context, agent string, now time.Time) error {
	key := Key(agent)
	found := false
	err := s.mutate(ctx, func(data map[string]string) bool {
		e, err := decode(key, data[key], now)
		found = (err == nil || errors.Is(err, ErrFuture)) && e.Agent == agent && e.Banned
		if !found {
			return false
		}
		e.Banned = false
		data[key] = encode(e)
		return true
	})
	if err == nil && !found {
		return ErrNotBanned
	}
	return err
}

// encode is e as its ConfigMap value.
func encode(e Eviction) string {
	raw, _ := json.Marshal(e) // plain strings, times and a bool: cannot fail
	return string(raw)
}

// Prune drops the evictions that can no longer match a valid SVID at now:
// those past both their Until and At+lifetime, where lifetime is the
// longest an SVID issued at or before At can be valid (the agent SVID
// TTL plus the NotBefore backdate). A banned agent's entry is kept. An
// entry that does not parse is dropped too, so it cannot hold the
// ConfigMap's space forever. An entry dated more than MaxFuture ahead is
// rewritten as made now, and an Until more than MaxFuture past
// now+lifetime is brought back to now+lifetime, so that it is pruned in
// time. It returns how many it dropped.
func (s *Store) Prune(ctx context.Context, now time.Time, lifetime time.Duration) (int, error) {
	dropped := 0
	err := s.mutate(ctx, func(data map[string]string) bool {
		dropped = 0
		changed := false
		for k, v := range data {
			e, err := decode(k, v, now)
			if e.Agent == "" {
				delete(data, k)
				dropped++
				continue
			}
			if latest := now.Add(lifetime); e.Until.After(latest.Add(MaxFuture)) || errors.Is(err, ErrFuture) {
				if e.Until.After(latest) {
					e.Until = latest
				}
				data[k] = encode(e)
				changed = true
				continue
			}
			// A key that is not the agent's own still refuses it: kept.
			if e.Banned || !now.After(e.Until) || !now.After(e.At.Add(lifetime)) {
				continue
			}
			delete(data, k)
			dropped++
		}
		return changed || dropped > 0
	})
	if err != nil {
		return 0, err
	}
	return dropped, nil
}

// mutate reads the ConfigMap, lets change edit its data (reporting
// whether it did), and writes it back checked against the
// resourceVersion read, or creates it when absent; on a conflict it reads
// again and retries, up to maxAttempts times.
func (s *Store) mutate(ctx context.Context, change func(data map[string]string) bool) error {
	for range maxAttempts {
		cm, err := s.maps.Get(ctx, s.name, metav1.GetOptions{})
		create := apierrors.IsNotFound(err)
		switch {
		case create:
			cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: s.name, Labels: map[string]string{"app.kubernetes.io/part-of": "sigil"}}}
		case err != nil:
			return fmt.Errorf("evictions: reading ConfigMap %s: %w", s.name, err)
		}
		data := make(map[string]string, len(cm.Data)+1)
		for k, v := range cm.Data {
			data[k] = v
		}
		if !change(data) {
			return nil
		}
		if n, old := size(data), size(cm.Data); n > MaxBytes && n > old {
			return fmt.Errorf("%w: ConfigMap %s would hold %d bytes of evictions, over %d; evictions older than one agent SVID lifetime are pruned by the leader, or shorten --agent-x509-ttl", ErrFull, s.name, n, MaxBytes)
		}
		cm = cm.DeepCopy()
		cm.Data = data
		if create {
			_, err = s.maps.Create(ctx, cm, metav1.CreateOptions{})
		} else {
			_, err = s.maps.Update(ctx, cm, metav1.UpdateOptions{})
		}
		if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
			continue // another replica wrote since we read: read again
		}
		if err != nil {
			return fmt.Errorf("evictions: writing ConfigMap %s: %w", s.name, err)
		}
		return nil
	}
	return fmt.Errorf("evictions: writing ConfigMap %s: another writer won %d times in a row; try again", s.name, maxAttempts)
}

// size is the bytes of data's keys and values.
func size(data map[string]string) int {
	n := 0
	for k, v := range data {
		n += len(k) + len(v)
	}
	return n
}

// Lookup returns agent's eviction as Watch last saw it.
func (s *Store) Lookup(agent string) (Eviction, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.byID[agent]
	return e, ok
}

// Bytes is the size of the ConfigMap's data (keys and values) as Watch
// last saw it, to compare with MaxBytes.
func (s *Store) Bytes() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.bytes
}

// Synced reports whether Watch has read the ConfigMap (or found it
// absent) at least once; before that Lookup knows nothing.
func (s *Store) Synced() bool {
	s.mu.RLock()
	synced := s.synced
	s.mu.RUnlock()
	return synced != nil && synced()
}

// Fetch reads agent's eviction from the API server itself (one GET of the
// ConfigMap), not from what Watch last saw: the leader asks it before it
// signs an agent SVID, so that a watch lagging behind an eviction made on
// another replica cannot let it renew the evicted agent. It reports
// whether there is one; an error when the ConfigMap cannot be read (the
// caller fails closed). A ConfigMap that does not exist holds none. An
// entry dated more than MaxFuture past now is read as made now.
func (s *Store) Fetch(ctx context.Context, agent string, now time.Time) (Eviction, bool, error) {
	cm, err := s.maps.Get(ctx, s.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return Eviction{}, false, nil
	}
	if err != nil {
		return Eviction{}, false, fmt.Errorf("evictions: reading ConfigMap %s: %w", s.name, err)
	}
	if e, err := decode(Key(agent), cm.Data[Key(agent)], now); e.Agent == agent && (err == nil || errors.Is(err, ErrFuture)) {
		return e, true, nil
	}
	// Not under its own key (a hand edit): Parse keeps such entries too.
	byID, _ := Parse(cm, now)
	e, ok := byID[agent]
	return e, ok, nil
}

// Parse reads the evictions of a ConfigMap, by agent ID, at now. An entry
// that does not parse is left out and named in the errors; one whose key
// is not Key of its agent is kept (it still names an agent to refuse) and
// named too, and so is one dated more than MaxFuture past now (kept, read
// as made now; the error wraps ErrFuture).
func Parse(cm *corev1.ConfigMap, now time.Time) (map[string]Eviction, []error) {
	out := map[string]Eviction{}
	var errs []error
	for k, v := range cm.Data {
		e, err := decode(k, v, now)
		if err != nil && e.Agent == "" {
			errs = append(errs, err)
			continue
		}
		if err != nil {
			errs = append(errs, err)
		}
		if old, ok := out[e.Agent]; !ok || e.At.After(old.At) || (e.Banned && !old.Banned) {
			e.Banned = e.Banned || (ok && old.Banned)
			out[e.Agent] = e
		}
	}
	return out, errs
}

// decode parses the entry key=value at now; with a key mismatch, or a
// time more than MaxFuture past now (read as now; ErrFuture), it returns
// the eviction and an error.
func decode(key, value string, now time.Time) (Eviction, error) {
	var e Eviction
	if err := json.Unmarshal([]byte(value), &e); err != nil {
		return Eviction{}, fmt.Errorf("evictions: entry %q: %w", key, err)
	}
	if e.Agent == "" || e.At.IsZero() {
		return Eviction{}, fmt.Errorf("evictions: entry %q: agent and evicted_at are required", key)
	}
	var future error
	if e.At.After(now.Add(MaxFuture)) {
		future = fmt.Errorf("%w: entry %q of agent %q says %s, more than %s after now (%s)", ErrFuture, key, e.Agent, e.At.UTC().Format(time.RFC3339Nano), MaxFuture, now.UTC().Format(time.RFC3339Nano))
		e.At = now
	}
	if Key(e.Agent) != key {
		return e, errors.Join(fmt.Errorf("evictions: entry %q: the key is not the SHA-256 of agent %q", key, e.Agent), future)
	}
	return e, future
}
