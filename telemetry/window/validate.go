package window

import (
	"fmt"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/telemetry"
)

// Bounds of one StatsReport, checked by ValidateReport. An agent merges
// its sidecars' series by key, so a node's report holds one series per
// key it saw in the interval.
const (
	// MaxSeriesPerReport bounds a report's series.
	MaxSeriesPerReport = 10000
	// MaxDenialsPerReport bounds a report's denials (agents send the
	// most recent ones).
	MaxDenialsPerReport = 100
	// MaxProxiesPerReport bounds a report's sidecars.
	MaxProxiesPerReport = 1000
	// MaxFieldBytes bounds every string of a report (a SPIFFE ID is at
	// most 2048 bytes; names are DNS labels).
	MaxFieldBytes = 2048
	// MaxIntervalMillis bounds a report's interval: agents report every
	// 10 s.
	MaxIntervalMillis = 5 * 60 * 1000
	// MaxCount bounds every count of a series (requests, connections,
	// bytes, a bucket's): far above what a node counts in an interval,
	// and low enough that sums over the window cannot wrap.
	MaxCount = 1 << 40
)

// ValidateReport checks a report's shape: its bounds, reporters and
// protocols it knows, histograms whose index and count lists pair up over
// telemetry's buckets, failures no more than requests. Errors wrap
// ErrBadReport and name the offending field.
func ValidateReport(r *agentv1.StatsReport) error {
	if r == nil {
		return fmt.Errorf("%w: no report", ErrBadReport)
	}
	if r.GetEndUnixNanos() <= 0 {
		return fmt.Errorf("%w: end_unix_nanos %d is not a time", ErrBadReport, r.GetEndUnixNanos())
	}
	if iv := r.GetIntervalMillis(); iv <= 0 || iv > MaxIntervalMillis {
		return fmt.Errorf("%w: interval_millis %d is outside (0, %d]", ErrBadReport, iv, MaxIntervalMillis)
	}
	if n := len(r.GetSeries()); n > MaxSeriesPerReport {
		return fmt.Errorf("%w: %d series, more than %d", ErrBadReport, n, MaxSeriesPerReport)
	}
	if n := len(r.GetDenials()); n > MaxDenialsPerReport {
		return fmt.Errorf("%w: %d denials, more than %d", ErrBadReport, n, MaxDenialsPerReport)
	}
	if n := len(r.GetProxies()); n > MaxProxiesPerReport {
		return fmt.Errorf("%w: %d proxies, more than %d", ErrBadReport, n, MaxProxiesPerReport)
	}
	for i, se := range r.GetSeries() {
		if why := validSeries(se); why != "" {
			return fmt.Errorf("%w: series %d: %s", ErrBadReport, i, why)
		}
	}
	for i, d := range r.GetDenials() {
		if why := fieldsShort(d.GetSourcePrincipal(), d.GetDestinationPrincipal(), d.GetDestinationNamespace(), d.GetDestinationService(), d.GetMethod(), d.GetPath(), d.GetDecisionId()); why != "" {
			return fmt.Errorf("%w: denial %d: %s", ErrBadReport, i, why)
		}
	}
	for i, p := range r.GetProxies() {
		if why := fieldsShort(p.GetId(), p.GetSpiffeId(), p.GetNamespace(), p.GetService()); why != "" {
			return fmt.Errorf("%w: proxy %d: %s", ErrBadReport, i, why)
		}
	}
	return nil
}

// validSeries returns why se is malformed, or "".
func validSeries(se *agentv1.StatsSeries) string {
	k := se.GetKey()
	if k == nil {
		return "no key"
	}
	switch k.GetReporter() {
	case ReporterSource, ReporterDestination:
	default:
		return fmt.Sprintf("reporter %q is neither %q nor %q", k.GetReporter(), ReporterSource, ReporterDestination)
	}
	switch k.GetProtocol() {
	case "http", "grpc", "tcp":
	default:
		return fmt.Sprintf("protocol %q is not http, grpc or tcp", k.GetProtocol())
	}
	// An empty namespace is a host outside the mesh (its name is the
	// service), as only a caller's sidecar reports it.
	if k.GetDestinationService() == "" {
		return "destination_service is required"
	}
	if why := fieldsShort(k.GetSourcePrincipal(), k.GetDestinationPrincipal(), k.GetDestinationNamespace(), k.GetDestinationService(), k.GetDestinationSubset(), k.GetRoute()); why != "" {
		return why
	}
	for _, n := range []uint64{se.GetRequests(), se.GetTcpOpened(), se.GetTcpClosed(), se.GetBytesSent(), se.GetBytesReceived(), se.GetDryrunDenied()} {
		if n > MaxCount {
			return fmt.Sprintf("a count of %d, more than %d", n, uint64(MaxCount))
		}
	}
	if se.GetFailures() > se.GetRequests() {
		return fmt.Sprintf("%d failures of %d requests", se.GetFailures(), se.GetRequests())
	}
	idx, cnt := se.GetBucketIndex(), se.GetBucketCount()
	if len(idx) != len(cnt) {
		return fmt.Sprintf("%d bucket indexes but %d counts", len(idx), len(cnt))
	}
	// Every request is in the histogram once (the agent checks the same).
	var sum uint64
	for _, n := range cnt {
		if n > MaxCount {
			return fmt.Sprintf("a bucket count of %d, more than %d", n, uint64(MaxCount))
		}
		sum += n
	}
	if sum != se.GetRequests() {
		return fmt.Sprintf("the histogram holds %d requests, the series %d", sum, se.GetRequests())
	}
	if len(idx) > telemetry.NumBuckets {
		return fmt.Sprintf("%d buckets, more than %d", len(idx), telemetry.NumBuckets)
	}
	for _, b := range idx {
		if b >= telemetry.NumBuckets {
			return fmt.Sprintf("bucket index %d, beyond the last (%d)", b, telemetry.NumBuckets-1)
		}
	}
	return ""
}

// fieldsShort returns why one of fields is too long, or "".
func fieldsShort(fields ...string) string {
	for _, f := range fields {
		if len(f) > MaxFieldBytes {
			return fmt.Sprintf("a field of %d bytes, more than %d", len(f), MaxFieldBytes)
		}
	}
	return ""
}
