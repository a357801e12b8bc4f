package kube

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
)

// allowAllPolicy writes a Rego policy allowing every call into dir/policy
// and returns that directory: the tests using it are about routing.
func allowAllPolicy(t *testing.T, dir string) string {
	t.Helper()
	policyDir := filepath.Join(dir, "policy")
	if err := os.MkdirAll(policyDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(policyDir, "authz.rego"), []byte("package sigil.authz\n\ndefault allow := true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return policyDir
}

// countAnswers sends n GET requests for http://api/ with header hdr
// (nil for none) through client (a sidecar's outbound proxy), once the
// server sees sidecars sidecars all on its configuration, and counts the
// answers by the demo app's name; "failed" counts the rest.
func countAnswers(t *testing.T, admin *adminv1.AdminClient, client *http.Client, sidecars, n int, hdr http.Header) map[string]int {
	t.Helper()
	waitSynced(t, admin, sidecars)
	got := map[string]int{}
	for range n {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://api/", nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, vs := range hdr {
			req.Header[k] = vs
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var reply struct {
			Service string `json:"service"`
		}
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &reply) != nil {
			got["failed"]++
			continue
		}
		got[reply.Service]++
	}
	return got
}
