package proxy

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/policy"
)

// policyCacheMetrics are the size of the policy decision cache, which
// policy.MaxCacheBytes bounds (docs/limits.md).
func policyCacheMetrics(e *policy.Engine) []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sigil_policy_cache_bytes", Help: "Bytes held by the policy decision cache (keys and per-entry overhead)."},
			func() float64 { b, _ := e.CacheSize(); return float64(b) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sigil_policy_cache_entries", Help: "Decisions held by the policy decision cache."},
			func() float64 { _, n := e.CacheSize(); return float64(n) }),
	}
}

// metricService is the destination_service label of an outbound request:
// the service, or "unknown" for a name that is not in the mesh (the app
// chooses the Host; a label per name would grow the registry forever).
func (o *outbound) metricService(svc naming.Service) string {
	st := o.state.Load()
	if len(st.byService[svc]) == 0 && !st.table.HasRoutes(svc.String()) {
		return unknownService
	}
	return svc.Name
}
