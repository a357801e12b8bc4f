package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/e2e/harness"
)

// vsDocs writes n VirtualServices named prefix-i, each with a header value
// of pad bytes, and returns the YAML and the bytes of header values.
func vsDocs(prefix string, n, pad int) (string, int) {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: %s-%d\n  namespace: default\nspec:\n  hosts: [%s-%d]\n  http:\n", prefix, i, prefix, i)
		// The padding rides in header values of at most 8 KiB per route:
		// one route's header changes are bounded (traffic.MaxHeaderOpsBytes),
		// a resource's size only by --max-resource-bytes.
		for left := pad; left > 0 || left == pad; left -= 8 << 10 {
			fmt.Fprintf(&b, "  - headers:\n      request:\n        set:\n          x-pad: %q\n    route:\n    - destination:\n        host: %s-%d\n",
				strings.Repeat("x", min(left, 8<<10)), prefix, i)
			if left <= 8<<10 {
				break
			}
		}
	}
	return b.String(), n * pad
}

func sigilRun(t *testing.T, m *harness.Mesh, args ...string) (string, error) {
	t.Helper()
	return harness.Run(t, "sigil", append(args, "--admin-socket", adminv1.AdminSocket(m.DataDir))...)
}

// A configuration larger than gRPC's 4 MiB message limit used to be
// accepted and then break every agent's one Sync stream in a loop: no new
// entry, bundle or config reached any node. Now it travels as deltas on
// its own stream: a new entry still reaches the workload promptly, and
// the sidecar gets the whole configuration. A resource over the
// per-resource limit is refused at apply, naming its size and the limit,
// and nothing of that apply is stored.
func TestConfigCannotBlockIdentityWhenLarge(t *testing.T) {
	ids := startIdentities(t)
	m := ids.m
	_, apiApp := harness.StartApp(t, "api")
	harness.StartProxy(t, ids.api, "api", apiApp, ids.policyDir)
	admin := adminv1.NewAdminClient(adminv1.AdminSocket(m.DataDir))

	// 2,000 ordinary resources carrying 5 MB: past the old 4 MiB total.
	// Applied in files of 200, each well under any request limit, as a
	// user would grow a config.
	var out string
	var version int64
	padded := 0
	for i := range 10 {
		yaml, n := vsDocs(fmt.Sprintf("big%d", i), 200, 2500)
		padded += n
		var err error
		out, err = sigilRun(t, m, "apply", "-f", writeFile(t, m.Dir, yaml))
		if err != nil {
			t.Fatalf("apply: %v\n%s", err, out)
		}
	}
	if padded <= 4<<20 {
		t.Fatalf("test config is only %d bytes", padded)
	}
	if _, err := fmt.Sscanf(out[strings.LastIndex(out, "config version"):], "config version %d", &version); err != nil {
		t.Fatalf("no version in %q", out[max(0, len(out)-200):])
	}

	// Identity first: a new entry reaches the workload on node1.
	newID := "spiffe://example.org/ns/default/sa/late"
	m.Entry("node1", newID, "--selector", "unix:uid:"+myUID)
	start := time.Now()
	got := harness.MustRun(t, "sigil-agent", "api", "fetch", "x509", "--socket", ids.web.Socket, "--timeout", "20s")
	for !strings.Contains(got, newID) {
		if time.Since(start) > 20*time.Second {
			t.Fatalf("the new entry did not reach the workload within 20s beside a %d-byte config; fetch shows:\n%s\nagent log:\n%s", padded, got, tail(ids.web.Output(), 2000))
		}
		time.Sleep(200 * time.Millisecond) // the Workload API has no "entry arrived" signal to await
		got = harness.MustRun(t, "sigil-agent", "api", "fetch", "x509", "--socket", ids.web.Socket, "--timeout", "20s")
	}
	t.Logf("new entry reached the workload %s after it was created", time.Since(start).Round(time.Millisecond))

	// The sidecar runs the large configuration (it acknowledges the version
	// only after compiling all of it).
	deadline := time.Now().Add(60 * time.Second)
	for {
		ps, err := admin.ListProxies(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) == 1 && ps[0].ConfigVersion == version {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sidecar not at config version %d: %+v\nagent log:\n%s", version, ps, tail(ids.api.Output(), 2000))
		}
		time.Sleep(200 * time.Millisecond)
	}

	// One resource over 1 MiB, beside a small one: refused whole.
	huge, _ := vsDocs("huge", 1, 1200<<10)
	small, _ := vsDocs("small", 1, 10)
	out, err := sigilRun(t, m, "apply", "-f", writeFile(t, m.Dir, small+huge))
	if err == nil || !strings.Contains(out+err.Error(), "VirtualService default/huge-0: encoded size") ||
		!strings.Contains(out+err.Error(), "exceeds the per-resource limit of 1048576 bytes") {
		t.Fatalf("oversized resource: %v %s", err, out)
	}
	stored, err := admin.ListConfig(t.Context(), "virtualservices")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range stored {
		if strings.HasPrefix(r.Name, "small-") || strings.HasPrefix(r.Name, "huge-") {
			t.Fatalf("a refused apply stored %s", r.Name)
		}
	}
	if len(stored) != 2000 {
		t.Fatalf("%d resources stored, want 2000", len(stored))
	}
}

func tail(s string, n int) string { return s[max(0, len(s)-n):] }

// `sigil delete -f` of 2,000 resources is one request and one transaction:
// it used to be a request each, each reading and parsing the whole stored
// configuration (about a second apiece at 40,000 resources), so deleting
// in bulk took tens of minutes. Apply in bulk is bounded the same way.
func TestBulkDeleteScalesWithBatch(t *testing.T) {
	m := harness.StartMesh(t)
	yaml, _ := vsDocs("bulk", 2000, 10)
	path := writeFile(t, m.Dir, yaml)
	start := time.Now()
	if out, err := sigilRun(t, m, "apply", "-f", path); err != nil {
		t.Fatalf("apply: %v %s", err, out)
	}
	applied := time.Since(start)
	start = time.Now()
	out, err := sigilRun(t, m, "delete", "-f", path)
	if err != nil {
		t.Fatalf("delete: %v %s", err, out)
	}
	deleted := time.Since(start)
	t.Logf("apply -f of 2000: %s; delete -f of 2000: %s", applied, deleted)
	if n := strings.Count(out, " deleted\n"); n != 2000 {
		t.Fatalf("%d deleted, want 2000", n)
	}
	if applied > 15*time.Second || deleted > 15*time.Second {
		t.Fatalf("bulk apply took %s and delete %s; want each under 15s", applied, deleted)
	}
	stored, err := adminv1.NewAdminClient(adminv1.AdminSocket(m.DataDir)).ListConfig(t.Context(), "virtualservices")
	if err != nil || len(stored) != 0 {
		t.Fatalf("after delete: %d stored, %v", len(stored), err)
	}
	// Deleting again names what is missing and fails.
	out, err = sigilRun(t, m, "delete", "-f", path)
	if err == nil || !strings.Contains(out+err.Error(), "2000 of 2000 resources not found") {
		t.Fatalf("second delete: %v %s", err, tail(out, 300))
	}
}
