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
	"github.com/sigil-mesh/sigil/telemetry"
)

// Defaults and bounds of a Store.
const (
	// Resolution is the width of one slot.
	Resolution = 10 * time.Second
	// DefaultSpan is how far back the window reaches by default.
	DefaultSpan = 15 * time.Minute
	// DefaultMaxKeys bounds the distinct keys held in the window: about
	// twice what 1000 workloads use, and a full window of this many keys
	// stays near the memory bound (bench/README.md).
	DefaultMaxKeys = 25000
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

// Key is what one series is about (telemetry.Key, the sidecars' and
// agents' own).
type Key = telemetry.Key

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
	keys      ids[Key]
	sidecars  ids[Sidecar]
	swept     int64  // the slot number of the last sweep
	dropped   uint64 // series dropped for the key bound
	denials   []adminv1.Denial
	denialPos int // where the next denial goes once denials is full

	scratch counts // decoding and merging, under mu
	buf     []byte
}

// slot is one Resolution of time, numbered by its start in Unix time
// divided by Resolution; n is 0 while unused.
type slot struct {
	n int64
	// at[id] is 1 + the offset in data of key id's record (record.go),
	// 0 when the key did not count in this slot.
	at []uint32
	// data holds the records; garbage counts its bytes no record uses
	// any more (a record that grew moved to the end).
	data     []byte
	garbage  int
	sidecars map[uint32]struct{} // ids of the sidecars that reported
	overflow uint64              // the reports' overflow: counted in no series
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
		slots: make([]slot, int(cfg.Span/Resolution)+1)}
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
	return s.keys.len()
}

func slotNumber(t time.Time) int64 { return t.UnixNano() / int64(Resolution) }

// Add merges one report of agent (its SPIFFE ID) into the window: its
// series into the slot of the report's end, its sidecars as meshed in that
// slot, its denials into the recent denials. It returns how many series
// it dropped because the window already held MaxKeys keys. A report that
// fails ValidateReport, or that ends more than MaxSkew in the future or
// before the window, is refused whole with an error wrapping ErrBadReport.
func (s *Store) Add(agent string, r *agentv1.StatsReport) (dropped int, err error) {
	if err := ValidateReport(r); err != nil {
		return 0, err
	}
	now := s.now()
	end := time.Unix(0, r.GetEndUnixNanos())
	if end.After(now.Add(MaxSkew)) {
		return 0, fmt.Errorf("%w: it ends at %s, more than %v after the server's clock (%s)", ErrBadReport, end.UTC().Format(time.RFC3339), MaxSkew, now.UTC().Format(time.RFC3339))
	}
	if end.After(now) {
		end = now
	}
	n, cur := slotNumber(end), slotNumber(now)
	if n <= cur-int64(len(s.slots)) {
		return 0, fmt.Errorf("%w: it ends at %s, before the window the server keeps (%v)", ErrBadReport, end.UTC().Format(time.RFC3339), s.Span())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep(cur)
	sl := s.slot(n)
	sl.overflow = satAdd(sl.overflow, min(r.GetOverflow(), MaxCount))
	for _, se := range r.GetSeries() {
		id, ok := s.keys.id(telemetry.KeyOf(se.GetKey()), n, s.maxKeys)
		if !ok {
			dropped++
			continue
		}
		s.merge(sl, id, se)
	}
	for _, p := range r.GetProxies() {
		id, ok := s.sidecars.id(Sidecar{Agent: agent, ID: p.GetId(), SPIFFEID: p.GetSpiffeId(), Namespace: p.GetNamespace(), Service: p.GetService()}, n, s.maxKeys)
		if !ok {
			break
		}
		sl.sidecars[id] = struct{}{}
	}
	for _, d := range r.GetDenials() {
		s.addDenial(adminv1.Denial{Time: time.Unix(0, d.GetUnixNanos()).UTC(), Source: d.GetSourcePrincipal(), Destination: d.GetDestinationPrincipal(),
			Namespace: d.GetDestinationNamespace(), Service: d.GetDestinationService(), Method: d.GetMethod(), Path: d.GetPath(), DecisionID: d.GetDecisionId()})
	}
	s.dropped += uint64(dropped)
	return dropped, nil
}

// slot returns the slot numbered n, emptied for reuse (keeping its
// storage) if it held an older one. The caller holds mu and has checked n
// is within the ring.
func (s *Store) slot(n int64) *slot {
	sl := &s.slots[n%int64(len(s.slots))]
	if sl.n != n {
		sl.n = n
		if sl.sidecars == nil {
			sl.sidecars = map[uint32]struct{}{}
		}
		clear(sl.at)
		clear(sl.sidecars)
		sl.data, sl.garbage, sl.overflow = sl.data[:0], 0, 0
	}
	return sl
}

// sweep forgets the keys and sidecars whose last count has left the
// window, once per slot. The caller holds mu.
func (s *Store) sweep(cur int64) {
	if cur == s.swept {
		return
	}
	s.swept = cur
	oldest := cur - int64(len(s.slots)) + 1
	s.keys.sweep(oldest)
	s.sidecars.sweep(oldest)
}

// merge adds se to key id's record in sl. The caller holds mu.
func (s *Store) merge(sl *slot, id uint32, se *agentv1.StatsSeries) {
	if int(id) >= len(sl.at) {
		sl.at = append(sl.at, make([]uint32, int(id)+1-len(sl.at))...)
	}
	c := &s.scratch
	c.reset()
	off, old := sl.at[id], 0
	if off != 0 {
		old = c.decode(sl.data[off-1:])
	}
	c.addSeries(se)
	s.buf = c.encode(s.buf[:0])
	if off != 0 && len(s.buf) <= old {
		copy(sl.data[off-1:], s.buf)
		sl.garbage += old - len(s.buf)
	} else {
		sl.garbage += old
		sl.at[id] = uint32(len(sl.data)) + 1
		sl.data = append(sl.data, s.buf...)
	}
	if sl.garbage > 64<<10 && sl.garbage > len(sl.data)/2 {
		s.compact(sl)
	}
}

// compact rewrites sl's records without the bytes no record uses. The
// caller holds mu.
func (s *Store) compact(sl *slot) {
	data := make([]byte, 0, len(sl.data)-sl.garbage)
	for id, off := range sl.at {
		if off == 0 {
			continue
		}
		n := s.scratch.decode(sl.data[off-1:])
		sl.at[id] = uint32(len(data)) + 1
		data = append(data, sl.data[off-1:int(off-1)+n]...)
	}
	sl.data, sl.garbage = data, 0
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
