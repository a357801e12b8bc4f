package window

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/telemetry"
)

// The answers: rows and edges summed over the complete slots of a query's
// window. The slot being filled is left out until it is complete, so a
// figure is never diluted by a slot only some agents have reported into
// yet; figures are therefore 10 to 20 s behind.

// rowKey groups series into one row (or one edge).
type rowKey struct {
	namespace, service, subset, route string
	workload                          string // StatWorkload: the destination's SPIFFE ID
	source                            string // edges: the caller's SPIFFE ID
}

// acc sums a row's series.
type acc struct {
	requests, failures, tcpOpened, bytesSent, bytesReceived uint64
	dryRunDenied                                            uint64
	hist                                                    [telemetry.NumBuckets]uint64
}

// span is the slots a query covers, [first, last], and the seconds they
// cover since the store started.
type span struct {
	first, last int64
	seconds     float64
	window      time.Duration
	end         time.Time
}

// checkWindow applies a query's window: 0 means DefaultQueryWindow;
// otherwise it must be a positive multiple of Resolution within Span.
func (s *Store) checkWindow(w time.Duration) (span, error) {
	if w == 0 {
		w = DefaultQueryWindow
	}
	if w < 0 || w%Resolution != 0 || w > s.Span() {
		return span{}, fmt.Errorf("%w: window %v is not a multiple of %v between %v and %v", ErrBadQuery, w, Resolution, Resolution, s.Span())
	}
	cur := slotNumber(s.now())
	sp := span{first: cur - int64(w/Resolution), last: cur - 1, window: w, end: time.Unix(0, cur*int64(Resolution)).UTC()}
	// Before the store started there was nothing to count: the rate is
	// over the time it has been listening.
	from := time.Unix(0, sp.first*int64(Resolution))
	if s.started.After(from) {
		from = s.started
	}
	if d := time.Unix(0, cur*int64(Resolution)).Sub(from); d > 0 {
		sp.seconds = d.Seconds()
	}
	return sp, nil
}

// each calls fn for every key's counts in the span. c is reused between
// calls. The caller holds mu.
func (s *Store) each(sp span, fn func(k *Key, c *counts)) {
	for n := sp.first; n <= sp.last; n++ {
		sl := &s.slots[n%int64(len(s.slots))]
		if sl.n != n {
			continue
		}
		for id, off := range sl.at {
			if off == 0 {
				continue
			}
			s.scratch.decode(sl.data[off-1:])
			fn(s.keys.value(uint32(id)), &s.scratch)
		}
	}
}

// meshed counts the distinct sidecars that reported in the span, by
// service (namespace/name) and by identity. The caller holds mu.
func (s *Store) meshed(sp span) (byService, byIdentity map[string]int) {
	byService, byIdentity = map[string]int{}, map[string]int{}
	s.eachSidecar(sp, func(sc *Sidecar) {
		byService[sc.Namespace+"/"+sc.Service]++
		byIdentity[sc.SPIFFEID]++
	})
	return byService, byIdentity
}

// eachSidecar calls fn once for every sidecar that reported in the span.
// The caller holds mu.
func (s *Store) eachSidecar(sp span, fn func(sc *Sidecar)) {
	seen := map[uint32]bool{}
	for n := sp.first; n <= sp.last; n++ {
		sl := &s.slots[n%int64(len(s.slots))]
		if sl.n != n {
			continue
		}
		for id := range sl.sidecars {
			if !seen[id] {
				seen[id] = true
				fn(s.sidecars.value(id))
			}
		}
	}
}

func (a *acc) add(c *counts) {
	a.requests = satAdd(a.requests, c.requests)
	a.failures = min(satAdd(a.failures, c.failures), a.requests)
	a.tcpOpened = satAdd(a.tcpOpened, c.tcpOpened)
	a.bytesSent = satAdd(a.bytesSent, c.bytesSent)
	a.bytesReceived = satAdd(a.bytesReceived, c.bytesReceived)
	a.dryRunDenied = satAdd(a.dryRunDenied, c.dryRunDenied)
	c.addTo(&a.hist)
}

// golden turns sums over seconds into golden metrics; percentiles come
// from the merged histogram.
func (a *acc) golden(seconds float64) adminv1.Golden {
	g := adminv1.Golden{Requests: a.requests, Failures: a.failures, TCPConnections: a.tcpOpened, BytesSent: a.bytesSent, BytesReceived: a.bytesReceived, DryRunDenied: a.dryRunDenied}
	if seconds > 0 {
		g.RPS = float64(a.requests) / seconds
	}
	if a.requests > 0 {
		sr := float64(a.requests-a.failures) / float64(a.requests)
		g.SuccessRate = &sr
	}
	pct := func(q float64) *float64 {
		d, ok := telemetry.Quantile(a.hist[:], q)
		if !ok {
			return nil
		}
		ms := float64(d) / float64(time.Millisecond)
		return &ms
	}
	g.P50, g.P95, g.P99 = pct(0.50), pct(0.95), pct(0.99)
	return g
}

// Stats answers a StatQuery: one row per service, subset, workload or
// route of the query's kind, summed over its window. Service and workload
// rows count what destinations reported; subset and route rows what
// sources reported (see the package comment). A service or workload with
// sidecars that reported but no traffic has a row of zeros. Errors wrap
// ErrBadQuery.
func (s *Store) Stats(ctx context.Context, q adminv1.StatQuery) (adminv1.StatResponse, error) {
	if err := ctx.Err(); err != nil {
		return adminv1.StatResponse{}, err
	}
	kind := q.Kind
	if kind == "" {
		kind = adminv1.StatService
	}
	reporter := ReporterDestination
	switch kind {
	case adminv1.StatService, adminv1.StatWorkload:
	case adminv1.StatSubset, adminv1.StatRoute:
		reporter = ReporterSource
	default:
		return adminv1.StatResponse{}, fmt.Errorf("%w: kind %q is not one of %s, %s, %s, %s", ErrBadQuery, q.Kind, adminv1.StatService, adminv1.StatSubset, adminv1.StatWorkload, adminv1.StatRoute)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sp, err := s.checkWindow(q.Window)
	if err != nil {
		return adminv1.StatResponse{}, err
	}
	s.sweep(sp.last + 1)
	rows := map[rowKey]*acc{}
	s.each(sp, func(k *Key, c *counts) {
		if k.Reporter != reporter || (q.Namespace != "" && k.DestinationNamespace != q.Namespace) {
			return
		}
		rk := rowKey{namespace: k.DestinationNamespace}
		switch kind {
		case adminv1.StatService:
			rk.service = k.DestinationService
		case adminv1.StatSubset:
			rk.service, rk.subset = k.DestinationService, k.DestinationSubset
		case adminv1.StatRoute:
			rk.service, rk.route = k.DestinationService, k.Route
		case adminv1.StatWorkload:
			rk.workload = k.DestinationPrincipal
		}
		if q.Name != "" && q.Name != rk.service && q.Name != rk.workload {
			return
		}
		a := rows[rk]
		if a == nil {
			a = &acc{}
			rows[rk] = a
		}
		a.add(c)
	})
	byService, byIdentity := s.meshed(sp)
	if kind == adminv1.StatService || kind == adminv1.StatWorkload {
		s.addIdle(sp, kind, q, rows)
	}
	out := adminv1.StatResponse{Window: sp.window, Resolution: Resolution, End: sp.end, Rows: make([]adminv1.StatRow, 0, len(rows))}
	for n := sp.first; n <= sp.last; n++ {
		if sl := &s.slots[n%int64(len(s.slots))]; sl.n == n {
			out.Overflow = satAdd(out.Overflow, sl.overflow)
		}
	}
	for rk, a := range rows {
		row := adminv1.StatRow{Kind: kind, Namespace: rk.namespace, Name: rk.service, Subset: rk.subset, Route: rk.route, Golden: a.golden(sp.seconds)}
		row.Meshed = byService[rk.namespace+"/"+rk.service]
		if kind == adminv1.StatWorkload {
			row.Name, row.Meshed = rk.workload, byIdentity[rk.workload]
		}
		out.Rows = append(out.Rows, row)
	}
	slices.SortFunc(out.Rows, func(a, b adminv1.StatRow) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name), cmp.Compare(a.Subset, b.Subset), cmp.Compare(a.Route, b.Route))
	})
	return out, nil
}

// addIdle adds empty rows for the services (or workloads) whose sidecars
// reported in the span without traffic. The caller holds mu.
func (s *Store) addIdle(sp span, kind string, q adminv1.StatQuery, rows map[rowKey]*acc) {
	s.eachSidecar(sp, func(sc *Sidecar) {
		if q.Namespace != "" && sc.Namespace != q.Namespace {
			return
		}
		rk := rowKey{namespace: sc.Namespace, service: sc.Service}
		if kind == adminv1.StatWorkload {
			rk = rowKey{namespace: sc.Namespace, workload: sc.SPIFFEID}
		}
		if q.Name != "" && q.Name != rk.service && q.Name != rk.workload {
			return
		}
		if rows[rk] == nil {
			rows[rk] = &acc{}
		}
	})
}

// Edges answers who talked to whom in the query's window (its namespace
// keeps edges into that namespace; its kind and name are not used): one
// edge per caller identity, destination service and destination identity,
// as destinations reported them. Errors wrap ErrBadQuery.
func (s *Store) Edges(ctx context.Context, q adminv1.StatQuery) (adminv1.EdgesResponse, error) {
	if err := ctx.Err(); err != nil {
		return adminv1.EdgesResponse{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sp, err := s.checkWindow(q.Window)
	if err != nil {
		return adminv1.EdgesResponse{}, err
	}
	s.sweep(sp.last + 1)
	edges := map[rowKey]*acc{}
	s.each(sp, func(k *Key, c *counts) {
		if k.Reporter != ReporterDestination || (q.Namespace != "" && k.DestinationNamespace != q.Namespace) {
			return
		}
		rk := rowKey{namespace: k.DestinationNamespace, service: k.DestinationService, workload: k.DestinationPrincipal, source: k.SourcePrincipal}
		a := edges[rk]
		if a == nil {
			a = &acc{}
			edges[rk] = a
		}
		a.add(c)
	})
	out := adminv1.EdgesResponse{Window: sp.window, End: sp.end, Edges: make([]adminv1.Edge, 0, len(edges))}
	for rk, a := range edges {
		out.Edges = append(out.Edges, adminv1.Edge{Source: rk.source, DestinationNamespace: rk.namespace, DestinationService: rk.service, Destination: rk.workload, Golden: a.golden(sp.seconds)})
	}
	slices.SortFunc(out.Edges, func(a, b adminv1.Edge) int {
		return cmp.Or(cmp.Compare(a.Source, b.Source), cmp.Compare(a.DestinationNamespace, b.DestinationNamespace),
			cmp.Compare(a.DestinationService, b.DestinationService), cmp.Compare(a.Destination, b.Destination))
	})
	return out, nil
}
