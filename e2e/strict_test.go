package e2e

import (
	"encoding/json"
	"math"
	"os/exec"
	"strings"
	"testing"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/e2e/harness"
)

// What Istio accepts and Sigil used to refuse works through the real
// binaries: weights are relative (1 and 3 split a quarter and three
// quarters), a route to a subset no DestinationRule defines is applied
// with a warning from `sigil apply` and answers 503 until the subset
// exists, and headers.request.set of host rewrites the authority the
// app sees.
func TestTrafficRelativeWeightsUndefinedSubsetAuthority(t *testing.T) {
	t.Parallel()
	tm := startTrafficMesh(t, &backend{name: "api-v1", version: "v1"}, &backend{name: "api-v2", version: "v2"})
	tm.apply(t, subsetsDR+"---\n"+splitVS(1, 3))
	by, failed := count(tm.load(800, 8, "/", nil))
	if failed > 0 {
		t.Fatalf("%d requests failed", failed)
	}
	if v1 := float64(by["api-v1"]) / 8; math.Abs(v1-25) > 6 {
		t.Fatalf("weights 1:3 measured %.1f%% to v1 over 800 requests, want 25%%", v1)
	}

	vs := `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: api
spec:
  hosts: [api]
  http:
  - match:
    - uri: {prefix: /missing}
    route:
    - destination: {host: api, subset: v9}
  - headers:
      request:
        set: {host: api.internal.example}
    route:
    - destination: {host: api, subset: v1}
`
	path := writeTemp(t, tm, vs)
	out, err := exec.Command(harness.Bin("sigil"), "apply", "-f", path, "--admin-socket", adminv1.AdminSocket(tm.ids.m.DataDir)).CombinedOutput()
	if err != nil {
		t.Fatalf("apply refused a route to an undefined subset (Istio accepts it): %v: %s", err, out)
	}
	if !strings.Contains(string(out), `warning: VirtualService default/api: spec.http[0].route[0].destination.subset: subset "v9" of api is not defined by any DestinationRule`) ||
		!strings.Contains(string(out), "virtualservice.networking.istio.io/api configured") {
		t.Fatalf("apply said: %s", out)
	}
	tm.waitSynced(t)
	if r := tm.get("/missing", nil); r.err != nil || r.status != 503 {
		t.Fatalf("route to an undefined subset: %+v, want 503", r)
	}
	resp, err := tm.client.Get("http://api/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r appReply
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	if r.Service != "api-v1" || r.Host != "api.internal.example" {
		t.Fatalf("headers.request.set host: the app saw %+v", r)
	}
}
