package proxy

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/traffic"
)

// TestTwoLabelAuthorityIsOutsideUnlessMeshKnowsIt: an app's request for
// a two-label name (httpbin.org) is read as Kubernetes DNS reads it: the
// service httpbin of namespace org only when the mesh knows that service
// (endpoints, or a resource naming it), else the host outside the mesh,
// reached through its DestinationRule (tls DISABLE here, an httptest
// server standing as httpbin.org) and refused with 502 when no rule names
// it. reviews.prod, with endpoints, is the mesh service.
func TestTwoLabelAuthorityIsOutsideUnlessMeshKnowsIt(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "outside "+r.Host)
	}))
	t.Cleanup(srv.Close)
	const yaml = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin, namespace: prod}
spec:
  host: httpbin.org
  trafficPolicy: {tls: {mode: DISABLE}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: prod}
spec:
  host: ratings.staging.svc.cluster.local
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin, namespace: prod}
spec:
  hosts: [httpbin.org]
  http:
  - headers: {response: {set: {x-route: httpbin-org}}}
    route: [{destination: {host: httpbin.org}}]
`
	o := outsideMesh(t, srv.Listener.Addr().String(), yaml)
	rs, err := traffic.Parse([]byte(yaml), "t")
	if err != nil {
		t.Fatal(err)
	}
	o.setState(traffic.Compile(1, rs), 1, 1, []*agentv1.Endpoint{
		{Service: "reviews", Address: "10.0.0.1:15006", SpiffeId: "spiffe://example.org/ns/prod/sa/reviews"},
	})

	w := httptest.NewRecorder()
	o.ServeHTTP(w, httptest.NewRequest("GET", "http://httpbin.org/get", nil))
	if w.Code != http.StatusOK || w.Body.String() != "outside httpbin.org" || w.Header().Get("X-Route") != "httpbin-org" {
		t.Errorf("httpbin.org with a DISABLE rule: %d %q %v, want 200 from the outside host through its VirtualService", w.Code, w.Body, w.Header())
	}
	w = httptest.NewRecorder()
	o.ServeHTTP(w, httptest.NewRequest("GET", "http://example.org/", nil))
	if w.Code != http.StatusBadGateway {
		t.Errorf("example.org without a rule: %d %q, want 502", w.Code, w.Body)
	}

	for _, tt := range []struct {
		authority string
		want      naming.Service
		err       error
	}{
		{"reviews.prod", naming.Service{Name: "reviews", Namespace: "prod"}, nil},            // endpoints
		{"ratings.staging:9080", naming.Service{Name: "ratings", Namespace: "staging"}, nil}, // a DestinationRule names it
		{"httpbin.org", naming.Service{}, naming.ErrNotInMesh},
		{"reviews.staging", naming.Service{}, naming.ErrNotInMesh},
		{"reviews", naming.Service{Name: "reviews", Namespace: "prod"}, nil},
		{"reviews.staging.svc", naming.Service{Name: "reviews", Namespace: "staging"}, nil},
	} {
		r := httptest.NewRequest("GET", "http://"+tt.authority+"/", nil)
		got, _, err := o.destOf(r)
		if got != tt.want || tt.err == nil && err != nil || tt.err != nil && !errors.Is(err, tt.err) {
			t.Errorf("destOf(%s) = %+v, %v; want %+v, %v", tt.authority, got, err, tt.want, tt.err)
		}
	}
}
