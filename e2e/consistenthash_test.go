package e2e

import (
	"net/http"
	"strings"
	"testing"
)

// hashDR is a DestinationRule for api whose loadBalancer is consistentHash
// with key (YAML of the consistentHash object's fields).
func hashDR(key string) string {
	return "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: api}\nspec:\n  host: api\n  trafficPolicy:\n    loadBalancer:\n      consistentHash: " + key + "\n"
}

// TestConsistentHashAffinity: through the real sidecars, a consistentHash
// on a header sends each user's requests to one instance and spreads the
// users over the instances; an httpCookie the request lacks is set on the
// response (Max-Age from ttl), and requests carrying it stay on one
// instance.
func TestConsistentHashAffinity(t *testing.T) {
	t.Parallel()
	tm := startTrafficMesh(t, &backend{name: "api-v1", version: "v1"}, &backend{name: "api-v2", version: "v2"}, &backend{name: "api-v3", version: "v3"})
	tm.apply(t, hashDR("{httpHeaderName: x-user}"))
	used := map[string]bool{}
	for u := range 24 {
		user := "user-" + itoa(u)
		by, failed := count(tm.load(8, 2, "/", map[string]string{"x-user": user}))
		if failed > 0 || len(by) != 1 {
			t.Fatalf("%s: answered by %v, %d failed; want one instance", user, by, failed)
		}
		for name := range by {
			used[name] = true
		}
	}
	if len(used) < 2 {
		t.Fatalf("24 users all on %v", used)
	}

	tm.apply(t, hashDR("{httpCookie: {name: session, path: /, ttl: 60s}}"))
	first := tm.get("/", nil)
	if first.err != nil || first.status != http.StatusOK {
		t.Fatalf("first request: %+v", first)
	}
	var cookie *http.Cookie
	for _, c := range (&http.Response{Header: first.header}).Cookies() {
		if c.Name == "session" {
			cookie = c
		}
	}
	if cookie == nil || cookie.MaxAge != 60 || cookie.Path != "/" || !cookie.HttpOnly || cookie.Value == "" {
		t.Fatalf("Set-Cookie %q, want session=<hash>; Path=/; Max-Age=60; HttpOnly", first.header.Values("Set-Cookie"))
	}
	by, failed := count(tm.load(16, 2, "/", map[string]string{"Cookie": "session=" + cookie.Value}))
	if failed > 0 || len(by) != 1 {
		t.Fatalf("with the cookie: answered by %v, %d failed; want one instance", by, failed)
	}
	if again := tm.get("/", map[string]string{"Cookie": "session=" + cookie.Value}); strings.Contains(strings.Join(again.header.Values("Set-Cookie"), ";"), "session=") {
		t.Fatalf("a request with the cookie got another: %q", again.header.Values("Set-Cookie"))
	}
}

// TestH2UpgradePolicyThroughSidecars: with h2UpgradePolicy UPGRADE the
// app's HTTP/1.1 requests travel between
// the real sidecars over HTTP/2 and reach the HTTP/1.1 backends whole.
func TestH2UpgradePolicyThroughSidecars(t *testing.T) {
	t.Parallel()
	tm := startTrafficMesh(t, &backend{name: "api-v1", version: "v1"})
	tm.apply(t, "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: api}\nspec:\n  host: api\n  trafficPolicy:\n    connectionPool:\n      http: {h2UpgradePolicy: UPGRADE}\n")
	by, failed := count(tm.load(40, 4, "/", nil))
	if failed > 0 || by["api-v1"] != 40 {
		t.Fatalf("answered by %v, %d failed; want all 40 by api-v1", by, failed)
	}
}
