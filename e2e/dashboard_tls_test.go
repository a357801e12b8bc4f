package e2e

import (
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/e2e/harness"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// TestDashboardListenRule: the real sigil-server refuses a dashboard off
// loopback without TLS, naming the flag; with --dashboard-tls it serves
// only clients whose SVID (issued by its own CA through an agent) carries
// an admin ID, and its identities view lists the workload SVIDs it issued.
func TestDashboardListenRule(t *testing.T) {
	for _, args := range [][]string{
		{"--dashboard", "0.0.0.0:0"},
		{"--dashboard", ":0"},
		{"--dashboard", "127.0.0.1:0", "--dashboard-admin-id", webSA},
		{"--dashboard", "0.0.0.0:0", "--dashboard-tls"},
	} {
		dir := t.TempDir()
		out, err := harness.Run(t, "sigil-server", append([]string{"run", "--data-dir", filepath.Join(dir, "server"), "--trust-domain", harness.TrustDomain, "--bind", "127.0.0.1:0"}, args...)...)
		if err == nil || !strings.Contains(out+err.Error(), "--dashboard") {
			t.Errorf("sigil-server run %v: %v\n%s\nwant a refusal naming the dashboard flag", args, err, out)
		}
	}

	ids := startIdentities(t, "--dashboard", "127.0.0.1:0", "--dashboard-tls", "--dashboard-admin-id", webSA)
	dash := ids.m.Dashboard
	if !strings.HasPrefix(dash, "https://127.0.0.1:") {
		t.Fatalf("dashboard URL %q, want https on loopback", dash)
	}
	serverID := spiffeid.RequireFromString("spiffe://" + harness.TrustDomain + "/sigil/server")
	getAs := func(socket string) (int, string, error) {
		x509ctx, err := client(t, socket).FetchX509Context(ctxT(t, 10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		cfg := tlsconfig.MTLSClientConfig(x509ctx.DefaultSVID(), x509ctx.Bundles, tlsconfig.AuthorizeID(serverID))
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
		res, err := c.Get(dash + "api/identities")
		if err != nil {
			return 0, "", err
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b), nil
	}
	code, body, err := getAs(ids.web.Socket)
	if err != nil || code != http.StatusOK {
		t.Fatalf("admin (web's SVID): %d %v %s", code, err, body)
	}
	for _, want := range []string{`"spiffe_id":"` + webSA + `","kind":"workload"`, `"kind":"intermediate","status":"active"`, `"kind":"server"`} {
		if !strings.Contains(body, want) {
			t.Errorf("identities lack %s: %s", want, body)
		}
	}
	if code, body, err := getAs(ids.api.Socket); err == nil {
		t.Errorf("api's SVID, not an admin ID, got %d: %s", code, body)
	}
	if res, err := http.Get("http://" + strings.TrimPrefix(dash, "https://") + "api/identities"); err == nil {
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode == http.StatusOK {
			t.Errorf("plain HTTP to the TLS dashboard answered: %s", b)
		}
	}
}
