package server

import (
	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/server/registry"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

const agent1 = "spiffe://example.org/sigil/agent/join_token/node1"

func TestValidateEntry(t *testing.T) {
	tests := []struct {
		name    string
		req     adminv1.EntryRequest
		wantErr []string
	}{
		{"ok", adminv1.EntryRequest{SPIFFEID: "spiffe://example.org/ns/a/sa/b", ParentID: agent1, Selectors: []string{"unix:uid:1"}, X509TTL: time.Hour}, nil},
		{"other trust domain", adminv1.EntryRequest{SPIFFEID: "spiffe://other.org/x", ParentID: agent1, Selectors: []string{"unix:uid:1"}}, []string{"spiffe_id", "not in the trust domain"}},
		{"reserved path", adminv1.EntryRequest{SPIFFEID: "spiffe://example.org/sigil/agent/join_token/evil", ParentID: agent1, Selectors: []string{"unix:uid:1"}}, []string{"reserved"}},
		{"no path", adminv1.EntryRequest{SPIFFEID: "spiffe://example.org", ParentID: agent1, Selectors: []string{"unix:uid:1"}}, []string{"spiffe_id", "needs a path"}},
		{"parent in another trust domain", adminv1.EntryRequest{SPIFFEID: "spiffe://example.org/a", ParentID: "spiffe://other.org/sigil/agent/join_token/node1", Selectors: []string{"unix:uid:1"}}, []string{"parent_id", "not in the trust domain"}},
		{"parent is the server", adminv1.EntryRequest{SPIFFEID: "spiffe://example.org/a", ParentID: "spiffe://example.org/sigil/server", Selectors: []string{"unix:uid:1"}}, []string{"parent_id", "not an agent"}},
		{"parent not an agent", adminv1.EntryRequest{SPIFFEID: "spiffe://example.org/a", ParentID: "spiffe://example.org/ns/a/sa/b", Selectors: []string{"unix:uid:1"}}, []string{"parent_id", "not an agent"}},
		{"no selectors", adminv1.EntryRequest{SPIFFEID: "spiffe://example.org/a", ParentID: agent1}, []string{"selectors: at least one"}},
		{"bad selector", adminv1.EntryRequest{SPIFFEID: "spiffe://example.org/a", ParentID: agent1, Selectors: []string{"unix:uid:x"}}, []string{"decimal id"}},
		{"ttl too short", adminv1.EntryRequest{SPIFFEID: "spiffe://example.org/a", ParentID: agent1, Selectors: []string{"unix:uid:1"}, X509TTL: time.Second}, []string{"x509_ttl"}},
		{"entry id given", adminv1.EntryRequest{ID: "web-node1", SPIFFEID: "spiffe://example.org/ns/a/sa/b", ParentID: agent1, Selectors: []string{"unix:uid:1"}}, nil},
		{"entry id with a slash", adminv1.EntryRequest{ID: "a/b", SPIFFEID: "spiffe://example.org/ns/a/sa/b", ParentID: agent1, Selectors: []string{"unix:uid:1"}}, []string{"id \"a/b\""}},
		{"entry id of automatic pod identity", adminv1.EntryRequest{ID: "k8s-pod-0b5f6c1e-2d3a-4b5c-8d9e-0f1a2b3c4d5e", SPIFFEID: "spiffe://example.org/ns/a/sa/b", ParentID: agent1, Selectors: []string{"unix:uid:1"}}, []string{"reserved for the entries of automatic pod identity"}},
		{"entry id too long", adminv1.EntryRequest{ID: strings.Repeat("a", 65), SPIFFEID: "spiffe://example.org/ns/a/sa/b", ParentID: agent1, Selectors: []string{"unix:uid:1"}}, []string{"id "}},
		{"all wrong at once", adminv1.EntryRequest{SPIFFEID: "nope", ParentID: "nope"}, []string{"spiffe_id", "parent_id", "selectors"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := ValidateEntry(td, tt.req)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				if e.SPIFFEID != tt.req.SPIFFEID || len(e.Selectors) != 1 || e.ID != tt.req.ID {
					t.Fatalf("entry %+v", e)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted %+v", tt.req)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestConfigValidateNamesEveryFlag(t *testing.T) {
	_, err := Config{TrustDomain: "Not A Domain", Bind: "nope", DefaultX509TTL: time.Second, DefaultJWTTTL: time.Second, UpstreamCert: "x", StatsMaxKeys: -1,
		AuditExport: []string{"https://collector/logs?colour=red", "gopher://x"}, AuditSpoolMaxBytes: -1}.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	for _, flag := range []string{"--data-dir", "--trust-domain", "--bind", "--default-x509-ttl", "--default-jwt-ttl", "--upstream-cert and --upstream-key", "--stats-max-keys -1: want 1 to 1000000",
		"--audit-export: sink: https: unknown parameter \"colour\"", "(spec https://collector/logs?colour=red)", "--audit-export: sink: gopher://x: unknown scheme", "--audit-spool-max-bytes -1"} {
		if !strings.Contains(err.Error(), flag) {
			t.Errorf("error does not name %s: %v", flag, err)
		}
	}
	if _, err := (Config{DataDir: t.TempDir(), TrustDomain: "example.org", Bind: DefaultBind, DefaultX509TTL: DefaultX509TTL, DefaultJWTTTL: DefaultJWTTTL}).Validate(); err != nil {
		t.Fatal(err)
	}
}

func FuzzValidateEntry(f *testing.F) {
	f.Add("spiffe://example.org/ns/a/sa/b", agent1, "unix:uid:1", int64(3600))
	f.Add("spiffe://example.org/sigil/x", "spiffe://example.org/sigil/agent/a/b", "k8s:ns:x", int64(0))
	f.Add("spiffe://example.org", agent1, "unix:uid:1", int64(0))
	f.Fuzz(func(t *testing.T, id, parent, sel string, ttl int64) {
		e, err := ValidateEntry(td, adminv1.EntryRequest{SPIFFEID: id, ParentID: parent, Selectors: []string{sel}, X509TTL: time.Duration(ttl)})
		if err != nil {
			return
		}
		// Whatever passes is in the trust domain, has a path, is under an
		// agent, and is not reserved.
		got, perr := spiffeid.FromString(e.SPIFFEID)
		if perr != nil || !got.MemberOf(td) || got.Path() == "" || strings.HasPrefix(got.Path()+"/", "/sigil/") {
			t.Fatalf("accepted %q", e.SPIFFEID)
		}
		if !strings.HasPrefix(e.ParentID, "spiffe://example.org/sigil/agent/") || len(e.Selectors) == 0 {
			t.Fatalf("accepted parent %q selectors %v", e.ParentID, e.Selectors)
		}
	})
}

func TestAllowedServices(t *testing.T) {
	got := allowedServices([]registry.Entry{
		{SPIFFEID: "spiffe://example.org/ns/default/sa/web"},
		{SPIFFEID: "spiffe://example.org/ns/default/sa/bench", Services: []string{"api", "api-caller"}},
		{SPIFFEID: "spiffe://example.org/custom/path"},
	})
	if !got["spiffe://example.org/ns/default/sa/web"]["web"] || got["spiffe://example.org/ns/default/sa/web"]["api"] {
		t.Fatalf("default from the service account: %v", got)
	}
	if !got["spiffe://example.org/ns/default/sa/bench"]["api"] || got["spiffe://example.org/ns/default/sa/bench"]["bench"] {
		t.Fatalf("explicit services replace the default: %v", got)
	}
	if len(got["spiffe://example.org/custom/path"]) != 0 || got["spiffe://example.org/ns/other/sa/x"]["x"] {
		t.Fatalf("no services for other IDs, nor for IDs without an entry: %v", got)
	}
	if _, err := ValidateEntry(td, adminv1.EntryRequest{SPIFFEID: "spiffe://example.org/a", ParentID: agent1, Selectors: []string{"unix:uid:1"}, Services: []string{"Not_A_Name"}}); err == nil || !strings.Contains(err.Error(), "services") {
		t.Fatalf("bad service name: %v", err)
	}
}

// Which services an identity may serve by default is read from its ID by
// the one parser: exactly spiffe://td/ns/<ns>/sa/<sa>, never a suffix of a
// longer path.
func TestWorkloadIDRequiresPathAllowedServices(t *testing.T) {
	got := allowedServices([]registry.Entry{
		{SPIFFEID: "spiffe://example.org/ns/default/sa/api"},
		{SPIFFEID: "spiffe://example.org/evil/ns/default/sa/web"},
		{SPIFFEID: "spiffe://example.org/other", Services: []string{"db"}},
	})
	for id, want := range map[string][]string{
		"spiffe://example.org/ns/default/sa/api":      {"api"},
		"spiffe://example.org/evil/ns/default/sa/web": nil,
		"spiffe://example.org/other":                  {"db"},
	} {
		if len(got[id]) != len(want) {
			t.Errorf("%s may serve %v, want %v", id, got[id], want)
		}
		for _, svc := range want {
			if !got[id][svc] {
				t.Errorf("%s may not serve %s", id, svc)
			}
		}
	}
}
