package proxy

import (
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/traffic"
)

// Names an app makes up (Host, CONNECT authority) leave no state behind:
// no metric series of their own, no cluster, no connection pool.
func TestCacheMemoryBoundOutboundNames(t *testing.T) {
	o := testOutbound(&Proxy{cfg: &checked{}, log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	o.setState(traffic.Compile(0, nil), 0, 0, nil)
	st := o.state.Load()
	for i := range 5000 {
		name := naming.Service{Name: fmt.Sprintf("made-up-%d", i), Namespace: naming.DefaultNamespace}
		if got := o.metricService(name); got != "unknown" {
			t.Fatalf("metric label %q for a name outside the mesh", got)
		}
		if c := o.cluster(st, name, ""); c != nil {
			t.Fatalf("cluster built for %s", name)
		}
	}
	n := 0
	st.clusters.Range(func(any, any) bool { n++; return true })
	if n != 0 || o.clusters.Len() != 0 {
		t.Fatalf("%d clusters, %d pools and balancers kept for made-up names", n, o.clusters.Len())
	}
}
