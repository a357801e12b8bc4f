package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// corsVS routes api with a corsPolicy that allows https://example.com.
const corsVS = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: [api]
  http:
  - route: [{destination: {host: api}}]
    corsPolicy:
      allowOrigins: [{exact: https://example.com}]
      allowMethods: [POST, GET]
      allowHeaders: [X-Foo-Bar]
      exposeHeaders: [X-Request-Id]
      maxAge: 24h
      allowCredentials: true
`

// TestCORSPolicyThroughSidecars: through the real sidecars, the calling
// sidecar answers a CORS preflight from an allowed origin itself (the app
// never sees it), marks the app's answers to that origin, and gives an
// origin not allowed no CORS header at all, its preflight forwarded to the
// app (unmatchedPreflights FORWARD, the default).
func TestCORSPolicyThroughSidecars(t *testing.T) {
	t.Parallel()
	tm := startTrafficMesh(t, &backend{name: "api-v1", version: "v1"})
	tm.apply(t, corsVS)
	send := func(method, origin string, extra map[string]string) (*http.Response, appReply) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://api/items", nil)
		req.Header.Set("Origin", origin)
		for k, v := range extra {
			req.Header.Set(k, v)
		}
		resp, err := tm.client.Do(req)
		if err != nil {
			t.Fatalf("%s from %s: %v", method, origin, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var r appReply
		if len(body) > 0 && json.Unmarshal(body, &r) != nil {
			r.Service = strings.TrimSpace(string(body)) // the destination sidecar's refusal
		}
		return resp, r
	}
	preflight := map[string]string{"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-foo-bar"}

	resp, reply := send("OPTIONS", "https://example.com", preflight)
	want := map[string]string{
		"Access-Control-Allow-Origin": "https://example.com", "Access-Control-Allow-Methods": "POST,GET", "Access-Control-Allow-Headers": "X-Foo-Bar",
		"Access-Control-Max-Age": "86400", "Access-Control-Allow-Credentials": "true",
	}
	if resp.StatusCode != http.StatusOK || reply.Service != "" {
		t.Fatalf("allowed preflight: %d from %q; want 200 from the sidecar, not the app", resp.StatusCode, reply.Service)
	}
	for k, v := range want {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("allowed preflight: %s %q, want %q", k, got, v)
		}
	}

	resp, reply = send("GET", "https://example.com", nil)
	if resp.StatusCode != http.StatusOK || reply.Service != "api-v1" || reply.Headers["Origin"] != "https://example.com" {
		t.Fatalf("allowed GET: %d from %q (Origin at the app %q); want 200 from api-v1 with the Origin", resp.StatusCode, reply.Service, reply.Headers["Origin"])
	}
	for k, v := range map[string]string{"Access-Control-Allow-Origin": "https://example.com", "Access-Control-Allow-Credentials": "true", "Access-Control-Expose-Headers": "X-Request-Id"} {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("allowed GET: %s %q, want %q", k, got, v)
		}
	}

	resp, reply = send("GET", "https://evil.example", nil)
	if resp.StatusCode != http.StatusOK || reply.Service != "api-v1" {
		t.Fatalf("GET from an origin not allowed: %d from %q; want the app's 200 (the browser blocks it)", resp.StatusCode, reply.Service)
	}
	// Forwarded, the preflight meets api's policy, which allows web only
	// GET: api's sidecar refuses it, which the caller's never does.
	resp2, reply2 := send("OPTIONS", "https://evil.example", preflight)
	if resp2.StatusCode != http.StatusForbidden || !strings.Contains(reply2.Service, "RBAC: access denied") {
		t.Fatalf("preflight from an origin not allowed: %d %q; want it forwarded to api, whose policy refuses OPTIONS (403)", resp2.StatusCode, reply2.Service)
	}
	for _, r := range []*http.Response{resp, resp2} {
		for k, v := range r.Header {
			if strings.HasPrefix(k, "Access-Control-") {
				t.Errorf("origin not allowed: %s %q, want no CORS header", k, v)
			}
		}
	}
}
