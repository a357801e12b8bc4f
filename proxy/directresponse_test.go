package proxy

import (
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"

	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/traffic"
)

// TestDirectResponseAnswersAtSidecar: a route with a directResponse is
// answered by the sidecar with its status and body (string or base64
// bytes) and the route's response headers, and no upstream is needed;
// other routes of the same service still go upstream.
func TestDirectResponseAnswersAtSidecar(t *testing.T) {
	rs, err := traffic.Parse([]byte(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: [api]
  http:
  - match: [{uri: {exact: /teapot}}]
    directResponse: {status: 418, body: {string: "short and stout"}}
    headers: {response: {set: {x-served-by: sidecar}}}
  - match: [{uri: {exact: /bytes}}]
    directResponse: {status: 503, body: {bytes: "AAH/"}}
  - match: [{uri: {exact: /empty}}]
    directResponse: {status: 204}
  - route: [{destination: {host: api}}]
`), "vs.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{cfg: &checked{}, log: slog.New(slog.DiscardHandler)}
	o := testOutbound(p)
	o.setState(traffic.Compile(1, rs), 1, 1, nil)
	api := naming.Service{Name: "api", Namespace: "default"}
	for _, tt := range []struct {
		path, body, header string
		status             int
	}{
		{"/teapot", "short and stout", "sidecar", 418},
		{"/bytes", "\x00\x01\xff", "", 503},
		{"/empty", "", "", 204},
		{"/other", "", "", 503}, // the plain route: no endpoint of api
	} {
		w := httptest.NewRecorder()
		o.route(&statusRecorder{ResponseWriter: w}, httptest.NewRequest("GET", "http://api"+tt.path, nil), api, 80)
		got, _ := io.ReadAll(w.Result().Body)
		if w.Code != tt.status || (tt.path != "/other" && string(got) != tt.body) || w.Header().Get("X-Served-By") != tt.header {
			t.Errorf("%s: %d %q (x-served-by %q); want %d %q (%q)", tt.path, w.Code, got, w.Header().Get("X-Served-By"), tt.status, tt.body, tt.header)
		}
	}
}
