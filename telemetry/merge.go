package telemetry

import (
	"errors"
	"fmt"
	"sort"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"google.golang.org/protobuf/proto"
)

// MaxNodeKeys is how many keys a Merger holds by default (an agent's
// node over one interval); series of further keys count as overflow.
// Each key holds a dense histogram (about 1 KiB), so the default bounds a
// Merger near 10 MiB.
const MaxNodeKeys = 10000

// Merger adds reports up by key: counts and histograms are summed, the
// most recent denials kept, the reporting proxies listed. Its zero value
// is ready; it is not safe for concurrent use.
type Merger struct {
	// Max bounds the keys held (0: MaxNodeKeys).
	Max int

	keys           map[Key]*sums
	order          []Key // first-seen order, for a stable report
	overflow       uint64
	denials        []*agentv1.StatsDenial
	denialsDropped uint64
	proxies        map[string]*agentv1.Proxy
}

type sums struct {
	requests, failures        uint64
	buckets                   [NumBuckets]uint64
	opened, closed, sent, rcv uint64
	dryRun                    uint64
}

// ErrBadSeries is returned (wrapped) by Add for a series whose histogram
// does not match its counts or names a bucket out of range; the other
// series of the report still count.
var ErrBadSeries = errors.New("telemetry: bad series")

// Add adds a report's series, denials and overflow; from, when not nil,
// is listed among the interval's proxies. It returns an error wrapping
// ErrBadSeries naming the first series it refused.
func (m *Merger) Add(rep *agentv1.StatsReport, from *agentv1.Proxy) error {
	var bad error
	for _, s := range rep.GetSeries() {
		if err := checkSeries(s); err != nil {
			if bad == nil {
				bad = err
			}
			continue
		}
		m.addSeries(s)
	}
	m.overflow += rep.GetOverflow()
	m.denialsDropped += rep.GetDenialsDropped()
	for _, d := range rep.GetDenials() {
		m.deny(d)
	}
	if from != nil {
		if m.proxies == nil {
			m.proxies = map[string]*agentv1.Proxy{}
		}
		m.proxies[from.GetId()] = from
	}
	return bad
}

// Bounds of a key's fields: a principal is a SPIFFE ID (at most 2048
// bytes, the SPIFFE ID specification's limit), any other field a name of
// at most 253 bytes (a DNS name's).
const (
	MaxPrincipal = 2048
	MaxKeyName   = 253
)

// checkSeries refuses a key out of bounds and a histogram the server
// could not merge.
func checkSeries(s *agentv1.StatsSeries) error {
	k := s.GetKey()
	if len(k.GetSourcePrincipal()) > MaxPrincipal || len(k.GetDestinationPrincipal()) > MaxPrincipal {
		return fmt.Errorf("%w: principal longer than %d bytes", ErrBadSeries, MaxPrincipal)
	}
	for _, f := range []string{k.GetReporter(), k.GetDestinationNamespace(), k.GetDestinationService(), k.GetDestinationSubset(), k.GetRoute(), k.GetProtocol()} {
		if len(f) > MaxKeyName {
			return fmt.Errorf("%w: key field %.20q... longer than %d bytes", ErrBadSeries, f, MaxKeyName)
		}
	}
	if len(s.GetBucketIndex()) != len(s.GetBucketCount()) {
		return fmt.Errorf("%w: %d bucket indexes, %d counts", ErrBadSeries, len(s.GetBucketIndex()), len(s.GetBucketCount()))
	}
	var total uint64
	for i, b := range s.GetBucketIndex() {
		if b >= NumBuckets {
			return fmt.Errorf("%w: bucket %d, want below %d", ErrBadSeries, b, NumBuckets)
		}
		total += s.GetBucketCount()[i]
	}
	if total != s.GetRequests() || s.GetFailures() > s.GetRequests() {
		return fmt.Errorf("%w: %d requests (%d failed), histogram of %d", ErrBadSeries, s.GetRequests(), s.GetFailures(), total)
	}
	return nil
}

func (m *Merger) addSeries(s *agentv1.StatsSeries) {
	k := KeyOf(s.GetKey())
	if m.keys == nil {
		m.keys = map[Key]*sums{}
	}
	a := m.keys[k]
	if a == nil {
		limit := m.Max
		if limit <= 0 {
			limit = MaxNodeKeys
		}
		if len(m.keys) >= limit {
			m.overflow += s.GetRequests() + s.GetTcpOpened()
			return
		}
		a = &sums{}
		m.keys[k] = a
		m.order = append(m.order, k)
	}
	a.requests += s.GetRequests()
	a.failures += s.GetFailures()
	for i, b := range s.GetBucketIndex() {
		a.buckets[b] += s.GetBucketCount()[i]
	}
	a.opened += s.GetTcpOpened()
	a.closed += s.GetTcpClosed()
	a.sent += s.GetBytesSent()
	a.rcv += s.GetBytesReceived()
	a.dryRun += s.GetDryrunDenied()
}

// deny keeps d if it is among the MaxDenials most recent.
func (m *Merger) deny(d *agentv1.StatsDenial) {
	if len(d.GetSourcePrincipal()) > MaxPrincipal || len(d.GetDestinationPrincipal()) > MaxPrincipal ||
		len(d.GetDestinationNamespace()) > MaxKeyName || len(d.GetDestinationService()) > MaxKeyName || len(d.GetDecisionId()) > MaxKeyName {
		m.denialsDropped++
		return
	}
	d = proto.Clone(d).(*agentv1.StatsDenial)
	d.Method, d.Path = cut(d.Method, MaxDenialPath), cut(d.Path, MaxDenialPath)
	m.denials = append(m.denials, d)
	if len(m.denials) <= MaxDenials {
		return
	}
	sort.SliceStable(m.denials, func(i, j int) bool { return m.denials[i].GetUnixNanos() > m.denials[j].GetUnixNanos() })
	m.denialsDropped += uint64(len(m.denials) - MaxDenials)
	m.denials = m.denials[:MaxDenials]
}

// Len is the number of keys held.
func (m *Merger) Len() int { return len(m.keys) }

// series is what m holds as series, in the order keys first came.
func (m *Merger) series() []*agentv1.StatsSeries {
	out := make([]*agentv1.StatsSeries, 0, len(m.order))
	for _, k := range m.order {
		a := m.keys[k]
		s := &agentv1.StatsSeries{Key: k.Proto(), Requests: a.requests, Failures: a.failures,
			TcpOpened: a.opened, TcpClosed: a.closed, BytesSent: a.sent, BytesReceived: a.rcv, DryrunDenied: a.dryRun}
		for i, n := range a.buckets {
			if n > 0 {
				s.BucketIndex = append(s.BucketIndex, uint32(i))
				s.BucketCount = append(s.BucketCount, n)
			}
		}
		out = append(out, s)
	}
	return out
}

// MaxSeriesBytes bounds the encoded series of one report, sidecar's or
// agent's, well under gRPC's 4 MiB message limit (the rest of a report,
// denials and proxies, is small and bounded): series past it are left
// out and counted as overflow, so a report is never refused for its size.
const MaxSeriesBytes = 2 << 20

// trim leaves out the series past MaxSeriesBytes, in order, counting
// their requests and connections in the report's overflow.
func trim(rep *agentv1.StatsReport) {
	size := 0
	for i, s := range rep.Series {
		size += proto.Size(s) + 4 // the field's tag and length
		if size <= MaxSeriesBytes {
			continue
		}
		for _, left := range rep.Series[i:] {
			rep.Overflow += left.GetRequests() + left.GetTcpOpened()
		}
		rep.Series = rep.Series[:i]
		return
	}
}

// Take returns what m holds as the report of the interval of length
// interval ending at end, and empties m.
func (m *Merger) Take(end time.Time, interval time.Duration) *agentv1.StatsReport {
	rep := &agentv1.StatsReport{EndUnixNanos: end.UnixNano(), IntervalMillis: interval.Milliseconds(),
		Series: m.series(), Overflow: m.overflow, DenialsDropped: m.denialsDropped}
	trim(rep)
	sort.SliceStable(m.denials, func(i, j int) bool { return m.denials[i].GetUnixNanos() < m.denials[j].GetUnixNanos() })
	rep.Denials = m.denials
	ids := make([]string, 0, len(m.proxies))
	for id := range m.proxies {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		rep.Proxies = append(rep.Proxies, m.proxies[id])
	}
	*m = Merger{Max: m.Max}
	return rep
}
