// Package window is the server's short memory of golden metrics: a ring
// of 10-second slots (15 minutes by default) into which every agent's
// StatsReport is merged on arrival, by StatsKey, adding counts and
// latency histograms. It answers `sigil stat`, `sigil edges`, the
// dashboard and recent policy denials. Nothing is written to disk: a
// restart loses the window and nothing else.
//
// Which reporter feeds which rows follows Istio's reporter label: each
// side of a request knows different things. The destination's sidecar
// ("destination" series) knows the caller's identity as proven in the
// mTLS handshake and its own, so service and workload rows and edges
// come from it; a call is then counted once, by the side that served it.
// The caller's sidecar ("source" series) knows the VirtualService route
// that matched and the DestinationRule subset it chose, which the
// destination cannot tell, so subset and route rows come from it.
//
// Memory is bounded: at most MaxKeys distinct keys live in the window
// (series of further keys are dropped and counted), histograms are
// sparse (only buckets that counted take room), and a key whose last
// count has left the window is forgotten.
package window

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
)

// Defaults and bounds of a Store.
const (
	// Resolution is the width of one slot.
	Resolution = 10 * time.Second
	// DefaultSpan is how far back the window reaches by default.
	DefaultSpan = 15 * time.Minute
	// DefaultMaxKeys bounds the distinct keys held in the window.
	DefaultMaxKeys = 50000
	// DefaultMaxDenials is how many recent denials are kept.
	DefaultMaxDenials = 1000
	// DefaultQueryWindow is the window of a query that names none.
	DefaultQueryWindow = time.Minute
	// MaxSkew is how far in the future (by the store's clock) a report's
	// end may lie; a report ending later is refused, one ending sooner
	// is counted as ending now.
	MaxSkew = time.Minute
)

// Errors a caller may branch on.
var (
	// ErrBadReport is wrapped by Add's refusals of a malformed or
	// out-of-window report.
	ErrBadReport = errors.New("window: bad stats report")
	// ErrBadQuery is wrapped by the refusals of a query (unknown kind,
	// window not a positive multiple of Resolution or beyond the span).
	ErrBadQuery = errors.New("window: bad query")
)

// Config sets up a Store. The zero Config is the defaults with the wall
// clock.
type Config struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Span is how far back the window reaches, a multiple of Resolution;
	// 0 means DefaultSpan.
	Span time.Duration
	// MaxKeys bounds the distinct keys held; 0 means DefaultMaxKeys.
	MaxKeys int
	// MaxDenials bounds the recent denials kept; 0 means
	// DefaultMaxDenials.
	MaxDenials int
}

// Key is what one series is about: agentv1.StatsKey as a comparable value.
type Key struct {
	Reporter             string
	SourcePrincipal      string
	DestinationPrincipal string
	DestinationNamespace string
	DestinationService   string
	DestinationSubset    string
	Route                string
	Protocol             string
}

// Reporters, as StatsKey.reporter spells them.
const (
	ReporterSource      = "source"
	ReporterDestination = "destination"
)

// Sidecar is one sidecar that reported in a slot, counted for Meshed.
type Sidecar struct {
	Agent     string // the reporting agent's SPIFFE ID
	ID        string // the sidecar's id on its node
	SPIFFEID  string
	Namespace string
	Service   string
}

// Store is the window. Its methods are safe for concurrent use.
type Store struct {
	now        func() time.Time
	maxKeys    int
	maxDenials int
	started    time.Time

	mu        sync.Mutex
	slots     []slot // slot number n lives at slots[n % len(slots)]
	keys      map[Key]uint32
	recs      []keyRec // by key id
	free      []uint32 // ids of forgotten keys, for reuse
	swept     int64    // the slot number of the last sweep
	dropped   uint64   // series dropped for the key bound
	denials   []adminv1.Denial
	denialPos int // where the next denial goes once denials is full
}

type keyRec struct {
	key  Key
	last int64 // the newest slot that counted for the key; 0: free id
}

// slot is one Resolution of time, numbered by its start in Unix time
// divided by Resolution; n is 0 while unused.
type slot struct {
	n        int64
	index    map[uint32]int32 // key id → cells index
	cells    []cell
	sidecars map[Sidecar]struct{}
}

// cell is one key's counts in one slot. Counters of one slot are 32-bit
// and saturate (4 billion requests per key in 10 s is beyond any sidecar);
// bytes are 64-bit.
type cell struct {
	id                            uint32
	requests, failures, tcpOpened uint32
	bytesSent, bytesReceived      uint64
	hist                          sparse
}

// New returns an empty Store.
func New(cfg Config) (*Store, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Span == 0 {
		cfg.Span = DefaultSpan
	}
	if cfg.Span < Resolution || cfg.Span%Resolution != 0 {
		return nil, fmt.Errorf("window: span %v is not a positive multiple of %v", cfg.Span, Resolution)
	}
	if cfg.MaxKeys == 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	if cfg.MaxDenials == 0 {
		cfg.MaxDenials = DefaultMaxDenials
	}
	if cfg.MaxKeys < 0 || cfg.MaxDenials < 0 {
		return nil, fmt.Errorf("window: negative bound (max keys %d, max denials %d)", cfg.MaxKeys, cfg.MaxDenials)
	}
	// One slot more than the span: the slot being filled is not part of
	// any answer until it is complete.
	s := &Store{now: cfg.Now, maxKeys: cfg.MaxKeys, maxDenials: cfg.MaxDenials, started: cfg.Now(),
		slots: make([]slot, int(cfg.Span/Resolution)+1), keys: map[Key]uint32{}}
	return s, nil
}

// Span returns how far back the window reaches.
func (s *Store) Span() time.Duration { return time.Duration(len(s.slots)-1) * Resolution }

// Dropped returns how many series were dropped because MaxKeys keys were
// already held, since the store was made.
func (s *Store) Dropped() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

// Keys returns how many distinct keys the window holds.
func (s *Store) Keys() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.keys)
}

func slotNumber(t time.Time) int64 { return t.UnixNano() / int64(Resolution) }

// Add merges one report of agent (its SPIFFE ID) into the window: its
// series into the slot of the report's end, its sidecars as meshed in that
// slot, its denials into the recent denials. A report that fails
// ValidateReport, or that ends more than MaxSkew in the future or before
// the window, is refused whole with an error wrapping ErrBadReport.
func (s *Store) Add(agent string, r *agentv1.StatsReport) error {
	if err := ValidateReport(r); err != nil {
		return err
	}
	now := s.now()
	end := time.Unix(0, r.GetEndUnixNanos())
	if end.After(now.Add(MaxSkew)) {
		return fmt.Errorf("%w: it ends at %s, more than %v after the server's clock (%s)", ErrBadReport, end.UTC().Format(time.RFC3339), MaxSkew, now.UTC().Format(time.RFC3339))
	}
	if end.After(now) {
		end = now
	}
	n, cur := slotNumber(end), slotNumber(now)
	if n <= cur-int64(len(s.slots)) {
		return fmt.Errorf("%w: it ends at %s, before the window the server keeps (%v)", ErrBadReport, end.UTC().Format(time.RFC3339), s.Span())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep(cur)
	sl := s.slot(n)
	for _, se := range r.GetSeries() {
		id, ok := s.keyID(keyOf(se.GetKey()), n)
		if !ok {
			s.dropped++
			continue
		}
		sl.add(id, se)
	}
	for _, p := range r.GetProxies() {
		if len(sl.sidecars) >= s.maxKeys {
			break
		}
		sl.sidecars[Sidecar{Agent: agent, ID: p.GetId(), SPIFFEID: p.GetSpiffeId(), Namespace: p.GetNamespace(), Service: p.GetService()}] = struct{}{}
	}
	for _, d := range r.GetDenials() {
		s.addDenial(adminv1.Denial{Time: time.Unix(0, d.GetUnixNanos()).UTC(), Source: d.GetSourcePrincipal(), Destination: d.GetDestinationPrincipal(),
			Namespace: d.GetDestinationNamespace(), Service: d.GetDestinationService(), Method: d.GetMethod(), Path: d.GetPath(), DecisionID: d.GetDecisionId()})
	}
	return nil
}

func keyOf(k *agentv1.StatsKey) Key {
	return Key{Reporter: k.GetReporter(), SourcePrincipal: k.GetSourcePrincipal(), DestinationPrincipal: k.GetDestinationPrincipal(),
		DestinationNamespace: k.GetDestinationNamespace(), DestinationService: k.GetDestinationService(),
		DestinationSubset: k.GetDestinationSubset(), Route: k.GetRoute(), Protocol: k.GetProtocol()}
}

// slot returns the slot numbered n, emptied for reuse if it held an older
// one. The caller holds mu and has checked n is within the ring.
func (s *Store) slot(n int64) *slot {
	sl := &s.slots[n%int64(len(s.slots))]
	if sl.n != n {
		sl.n = n
		if sl.index == nil {
			sl.index = map[uint32]int32{}
			sl.sidecars = map[Sidecar]struct{}{}
		}
		clear(sl.index)
		clear(sl.sidecars)
		// Cells keep their histograms' storage for the next use.
		for i := range sl.cells {
			sl.cells[i] = cell{hist: sl.cells[i].hist[:0]}
		}
		sl.cells = sl.cells[:0]
	}
	return sl
}

// keyID returns k's id, making one if the bound allows, and notes that k
// counted in slot n. The caller holds mu.
func (s *Store) keyID(k Key, n int64) (uint32, bool) {
	id, ok := s.keys[k]
	if !ok {
		if len(s.keys) >= s.maxKeys {
			return 0, false
		}
		if l := len(s.free); l > 0 {
			id, s.free = s.free[l-1], s.free[:l-1]
			s.recs[id] = keyRec{key: k}
		} else {
			id = uint32(len(s.recs))
			s.recs = append(s.recs, keyRec{key: k})
		}
		s.keys[k] = id
	}
	if n > s.recs[id].last {
		s.recs[id].last = n
	}
	return id, true
}

// sweep forgets the keys whose last count has left the window, once per
// slot. The caller holds mu.
func (s *Store) sweep(cur int64) {
	if cur == s.swept {
		return
	}
	s.swept = cur
	oldest := cur - int64(len(s.slots)) + 1
	for id := range s.recs {
		r := &s.recs[id]
		if r.last != 0 && r.last < oldest {
			delete(s.keys, r.key)
			*r = keyRec{}
			s.free = append(s.free, uint32(id))
		}
	}
}

func (sl *slot) add(id uint32, se *agentv1.StatsSeries) {
	i, ok := sl.index[id]
	if !ok {
		i = int32(len(sl.cells))
		if len(sl.cells) < cap(sl.cells) {
			sl.cells = sl.cells[:i+1]
			sl.cells[i].id = id
		} else {
			sl.cells = append(sl.cells, cell{id: id})
		}
		sl.index[id] = i
	}
	c := &sl.cells[i]
	c.requests = add32(c.requests, se.GetRequests())
	c.failures = add32(c.failures, se.GetFailures())
	c.tcpOpened = add32(c.tcpOpened, se.GetTcpOpened())
	c.bytesSent += se.GetBytesSent()
	c.bytesReceived += se.GetBytesReceived()
	for j, b := range se.GetBucketIndex() {
		c.hist = c.hist.add(int(b), se.GetBucketCount()[j])
	}
}

// add32 adds v to a, saturating at the largest uint32.
func add32(a uint32, v uint64) uint32 {
	if v >= uint64(^uint32(0)-a) {
		return ^uint32(0)
	}
	return a + uint32(v)
}

// addDenial keeps d among the most recent maxDenials. The caller holds mu.
func (s *Store) addDenial(d adminv1.Denial) {
	if s.maxDenials == 0 {
		return
	}
	if len(s.denials) < s.maxDenials {
		s.denials = append(s.denials, d)
		return
	}
	s.denials[s.denialPos] = d
	s.denialPos = (s.denialPos + 1) % s.maxDenials
}

// Denials returns up to limit of the most recent denials (of namespace,
// when not empty), newest first; limit ≤ 0 means all that are kept.
func (s *Store) Denials(ctx context.Context, namespace string, limit int) (adminv1.DenialsResponse, error) {
	if err := ctx.Err(); err != nil {
		return adminv1.DenialsResponse{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := adminv1.DenialsResponse{Denials: []adminv1.Denial{}}
	n := len(s.denials)
	// The newest is just before denialPos (the ring is full) or last.
	newest := n - 1
	if n == s.maxDenials {
		newest = (s.denialPos - 1 + n) % n
	}
	for k := 0; k < n && (limit <= 0 || len(out.Denials) < limit); k++ {
		d := s.denials[(newest-k+n)%n]
		if namespace == "" || d.Namespace == namespace {
			out.Denials = append(out.Denials, d)
		}
	}
	return out, nil
}
