package telemetry

import (
	"sync"
	"sync/atomic"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
)

// Key is what one series of golden metrics is about: agentv1.StatsKey as
// a comparable value (a map key).
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

// Proto is k on the wire.
func (k Key) Proto() *agentv1.StatsKey {
	return &agentv1.StatsKey{Reporter: k.Reporter, SourcePrincipal: k.SourcePrincipal, DestinationPrincipal: k.DestinationPrincipal,
		DestinationNamespace: k.DestinationNamespace, DestinationService: k.DestinationService, DestinationSubset: k.DestinationSubset,
		Route: k.Route, Protocol: k.Protocol}
}

// KeyOf is the Key of a wire StatsKey (nil: the zero Key).
func KeyOf(k *agentv1.StatsKey) Key {
	return Key{Reporter: k.GetReporter(), SourcePrincipal: k.GetSourcePrincipal(), DestinationPrincipal: k.GetDestinationPrincipal(),
		DestinationNamespace: k.GetDestinationNamespace(), DestinationService: k.GetDestinationService(), DestinationSubset: k.GetDestinationSubset(),
		Route: k.GetRoute(), Protocol: k.GetProtocol()}
}

// Cell counts one key's requests and connections. Every method is safe
// for concurrent use and allocates nothing: the request path adds to it
// with atomic operations while Recorder.Swap takes the counts out.
type Cell struct {
	key      Key
	failures atomic.Uint64
	buckets  [NumBuckets]atomic.Uint64
	opened   atomic.Uint64
	closed   atomic.Uint64
	sent     atomic.Uint64
	received atomic.Uint64
	dryRun   atomic.Uint64 // denied by the dry-run policy (DryRunDenied)
	// idle counts the swaps in a row that found the cell empty.
	idle int
}

// Request counts one request that took d to its response headers; failed
// is a 5xx, a gRPC status other than OK, or no response.
func (c *Cell) Request(d time.Duration, failed bool) {
	c.buckets[Bucket(d)].Add(1)
	if failed {
		c.failures.Add(1)
	}
}

// DryRunDenied counts a request or TCP connection (counted too by
// Request or Opened) that the dry-run policy would have denied.
func (c *Cell) DryRunDenied() { c.dryRun.Add(1) }

// Opened counts an opaque TCP connection opened.
func (c *Cell) Opened() { c.opened.Add(1) }

// Closed counts an opaque TCP connection closed, with its bytes sent
// (towards the caller: the response) and received (from the caller).
func (c *Cell) Closed(sent, received uint64) {
	c.closed.Add(1)
	c.sent.Add(sent)
	c.received.Add(received)
}

// take moves the cell's counts into a series (nil when there were none).
func (c *Cell) take() *agentv1.StatsSeries {
	s := &agentv1.StatsSeries{}
	for i := range c.buckets {
		if n := c.buckets[i].Swap(0); n > 0 {
			s.BucketIndex = append(s.BucketIndex, uint32(i))
			s.BucketCount = append(s.BucketCount, n)
			s.Requests += n
		}
	}
	s.Failures = c.failures.Swap(0)
	s.TcpOpened = c.opened.Swap(0)
	s.TcpClosed = c.closed.Swap(0)
	s.BytesSent = c.sent.Swap(0)
	s.BytesReceived = c.received.Swap(0)
	s.DryrunDenied = c.dryRun.Swap(0)
	if s.Requests == 0 && s.Failures == 0 && s.TcpOpened == 0 && s.TcpClosed == 0 && s.BytesSent == 0 && s.BytesReceived == 0 && s.DryrunDenied == 0 {
		return nil
	}
	s.Key = c.key.Proto()
	return s
}

// Limits of a Recorder.
const (
	// MaxKeys is how many keys a sidecar counts by at once; what comes
	// for a new key beyond it is counted only as overflow. A key that saw
	// nothing for two intervals is dropped and frees its place.
	MaxKeys = 1000
	// MaxDenials is how many of an interval's policy denials a report
	// lists (the most recent ones).
	MaxDenials = 20
	// MaxDenialPath is the longest path a denial keeps; a longer one is
	// cut there.
	MaxDenialPath = 256
)

// Recorder counts a sidecar's golden metrics by key and hands them out
// once per interval as a report of deltas (Swap). Looking a key's cell up
// takes a read lock; the counting itself is atomic, so the request path
// neither allocates nor waits on Swap in steady state. Gen tells callers
// that cache cells when the cells they hold may have been dropped.
type Recorder struct {
	mu      sync.RWMutex
	cells   map[Key]*Cell
	retired []*Cell // dropped at the last swap: swept once more, for requests that held them
	gen     atomic.Uint64

	overflow atomic.Uint64
	start    time.Time

	denialMu sync.Mutex
	denials  [MaxDenials]Denial
	nDenials int    // how many of denials are set
	next     int    // where the next one goes
	dropped  uint64 // denials beyond the MaxDenials listed
}

// NewRecorder returns a Recorder whose first interval starts at now.
func NewRecorder(now time.Time) *Recorder {
	return &Recorder{cells: map[Key]*Cell{}, start: now}
}

// Gen is the generation of the cells: it changes whenever Swap drops
// cells, after which a cell obtained before may no longer be reported.
func (r *Recorder) Gen() uint64 { return r.gen.Load() }

// Cell returns k's cell, making it if there is room; nil when the
// recorder already holds MaxKeys keys (count the request with Overflow).
func (r *Recorder) Cell(k Key) *Cell {
	r.mu.RLock()
	c := r.cells[k]
	r.mu.RUnlock()
	if c != nil {
		return c
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if c = r.cells[k]; c != nil {
		return c
	}
	if len(r.cells) >= MaxKeys {
		return nil
	}
	c = &Cell{key: k}
	r.cells[k] = c
	return c
}

// Overflow counts a request or connection that had no cell.
func (r *Recorder) Overflow() { r.overflow.Add(1) }

// Denial is one request a sidecar's policy denied: who asked what of
// whom, never headers or bodies. Path is the normalized path, without
// the query.
type Denial struct {
	At                   time.Time
	SourcePrincipal      string
	DestinationPrincipal string
	DestinationNamespace string
	DestinationService   string
	Method               string
	Path                 string
	DecisionID           string
}

// Deny notes a policy denial; only the MaxDenials most recent ones of an
// interval are reported. The path is cut at MaxDenialPath bytes.
func (r *Recorder) Deny(d Denial) {
	d.Path = cut(d.Path, MaxDenialPath)
	d.Method = cut(d.Method, MaxDenialPath)
	r.denialMu.Lock()
	defer r.denialMu.Unlock()
	if r.nDenials == MaxDenials {
		r.dropped++
	} else {
		r.nDenials++
	}
	r.denials[r.next] = d
	r.next = (r.next + 1) % MaxDenials
}

func cut(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// Swap ends the interval at now: it returns the counts since the last
// Swap (or NewRecorder) as a report, leaves every cell at zero, and drops
// the cells that saw nothing for two intervals in a row.
func (r *Recorder) Swap(now time.Time) *agentv1.StatsReport {
	rep := &agentv1.StatsReport{EndUnixNanos: now.UnixNano()}
	r.mu.Lock()
	rep.IntervalMillis = now.Sub(r.start).Milliseconds()
	r.start = now
	retired := r.retired
	r.retired = nil
	for k, c := range r.cells {
		s := c.take()
		if s != nil {
			c.idle = 0
			rep.Series = append(rep.Series, s)
			continue
		}
		if c.idle++; c.idle >= 2 {
			delete(r.cells, k)
			r.retired = append(r.retired, c)
		}
	}
	if len(r.retired) > 0 {
		r.gen.Add(1)
	}
	r.mu.Unlock()
	// A request that looked its cell up before it was dropped adds to it
	// for a moment after: the previous swap's dropped cells are swept once
	// more (into their key's series when it is back).
	for _, c := range retired {
		if s := c.take(); s != nil {
			rep.Series = append(rep.Series, s)
		}
	}
	rep.Series = mergeSeries(rep.Series)
	rep.Overflow = r.overflow.Swap(0)
	trim(rep)

	r.denialMu.Lock()
	for i := range r.nDenials {
		d := r.denials[(r.next-r.nDenials+i+MaxDenials)%MaxDenials]
		rep.Denials = append(rep.Denials, &agentv1.StatsDenial{UnixNanos: d.At.UnixNano(), SourcePrincipal: d.SourcePrincipal,
			DestinationPrincipal: d.DestinationPrincipal, DestinationNamespace: d.DestinationNamespace, DestinationService: d.DestinationService,
			Method: d.Method, Path: d.Path, DecisionId: d.DecisionID})
	}
	rep.DenialsDropped = r.dropped
	r.nDenials, r.next, r.dropped = 0, 0, 0
	clear(r.denials[:])
	r.denialMu.Unlock()
	return rep
}

// mergeSeries folds series of the same key into one (a retired cell's
// late counts beside its key's new cell).
func mergeSeries(in []*agentv1.StatsSeries) []*agentv1.StatsSeries {
	if len(in) < 2 {
		return in
	}
	var m Merger
	for _, s := range in {
		m.addSeries(s)
	}
	return m.series()
}
