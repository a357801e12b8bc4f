package e2e

import "testing"

// delegateVSs are a root VirtualService for api whose /v route delegates
// to a delegate VirtualService (no hosts) that splits it by subset.
const delegateVSs = subsetsDR + `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: [api]
  http:
  - name: versions
    match: [{uri: {prefix: /v}}]
    delegate: {name: api-versions}
  - route: [{destination: {host: api, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api-versions}
spec:
  http:
  - match: [{uri: {prefix: /v2}}]
    route: [{destination: {host: api, subset: v2}}]
  - route: [{destination: {host: api, subset: v1}}]
`

// TestDelegateThroughSidecars: through the real sidecars, a root route's
// delegate VirtualService decides where its requests go: /v2... to v2,
// the rest of /v... and everything else to v1.
func TestDelegateThroughSidecars(t *testing.T) {
	t.Parallel()
	tm := startTrafficMesh(t, &backend{name: "api-v1", version: "v1"}, &backend{name: "api-v2", version: "v2"})
	tm.apply(t, delegateVSs)
	for _, tt := range []struct{ path, want string }{
		{"/v2/items", "api-v2"},
		{"/v1/items", "api-v1"},
		{"/other", "api-v1"},
	} {
		by, failed := count(tm.load(20, 4, tt.path, nil))
		if failed > 0 || by[tt.want] != 20 {
			t.Errorf("%s: answered by %v, %d failed; want all 20 by %s", tt.path, by, failed, tt.want)
		}
	}
}
