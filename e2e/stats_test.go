package e2e

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/e2e/harness"
	"github.com/sigil-mesh/sigil/telemetry"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// agentAPI is a grpc-go client of the server's agent API holding a's real
// agent SVID (from its data dir): the server sees a's calls.
func agentAPI(t *testing.T, m *harness.Mesh, a *harness.AgentProc) agentv1.AgentClient {
	t.Helper()
	svid, err := x509svid.Load(filepath.Join(a.DataDir, "agent_svid.pem"), filepath.Join(a.DataDir, "agent_svid.key"))
	if err != nil {
		t.Fatal(err)
	}
	roots, err := x509svidBundle(m)
	if err != nil {
		t.Fatal(err)
	}
	cfg := tlsconfig.MTLSClientConfig(svid, roots, tlsconfig.AuthorizeID(spiffeid.RequireFromString("spiffe://example.org/sigil/server")))
	conn, err := grpc.NewClient("passthrough:///"+m.Addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return agentv1.NewAgentClient(conn)
}

// sigilStat runs the real `sigil` with args against m's admin socket.
func sigilStat(t *testing.T, m *harness.Mesh, args ...string) (string, error) {
	t.Helper()
	return harness.Run(t, "sigil", append(args, "--admin-socket", adminv1.AdminSocket(m.DataDir))...)
}

// waitStatRows runs `sigil stat KIND -o json` until it has a row with
// requests (the report's slot must complete first: up to one resolution).
func waitStatRows(t *testing.T, m *harness.Mesh, kind string, extra ...string) adminv1.StatResponse {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := sigilStat(t, m, append([]string{"stat", kind, "-o", "json"}, extra...)...)
		if err != nil {
			t.Fatalf("sigil stat %s: %v: %s", kind, err, out)
		}
		var resp adminv1.StatResponse
		if err := json.Unmarshal([]byte(out), &resp); err != nil {
			t.Fatalf("sigil stat -o json: %v: %s", err, out)
		}
		for _, r := range resp.Rows {
			if r.Requests > 0 {
				return resp
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no traffic in sigil stat %s after 30s: %s", kind, out)
		}
		time.Sleep(500 * time.Millisecond) // the window publishes a slot when it completes; nothing to wait on from outside
	}
}

// An attested agent's StatsReport reaches `sigil stat`, `sigil edges`
// and the denials through the real server: the rows each reporter feeds,
// nothing of what the agent may not speak for (another node's workload),
// and a malformed report refused with InvalidArgument.
func TestStatsReportedByAgentReachSigilStat(t *testing.T) {
	t.Parallel()
	const dbSA = "spiffe://example.org/ns/default/sa/db"
	m := harness.StartMesh(t)
	m.Entry("node1", webSA, "--selector", "unix:uid:"+myUID)
	m.Entry("node1", apiSA, "--selector", "unix:uid:"+myUID)
	m.Entry("node2", dbSA, "--selector", "unix:uid:"+myUID)
	api := agentAPI(t, m, m.StartAgent("node1"))
	ctx := ctxT(t, 60*time.Second)

	series := func(reporter, src, dst, svc, subset, route string) *agentv1.StatsSeries {
		// 600 requests: 540 at 5 ms, 50 at 20 ms, 10 at 400 ms; 60 failed.
		return &agentv1.StatsSeries{
			Key:      &agentv1.StatsKey{Reporter: reporter, SourcePrincipal: src, DestinationPrincipal: dst, DestinationNamespace: "default", DestinationService: svc, DestinationSubset: subset, Route: route, Protocol: "http"},
			Requests: 600, Failures: 60,
			BucketIndex: []uint32{uint32(telemetry.Bucket(5 * time.Millisecond)), uint32(telemetry.Bucket(20 * time.Millisecond)), uint32(telemetry.Bucket(400 * time.Millisecond))},
			BucketCount: []uint64{540, 50, 10},
		}
	}
	rep := &agentv1.StatsReport{EndUnixNanos: time.Now().UnixNano(), IntervalMillis: 10000,
		Series: []*agentv1.StatsSeries{
			series("destination", webSA, apiSA, "api", "", ""),
			series("source", webSA, apiSA, "api", "v1", "canary"),
			series("destination", webSA, dbSA, "db", "", ""), // node2's workload
		},
		Denials: []*agentv1.StatsDenial{{UnixNanos: time.Now().UnixNano(), SourcePrincipal: webSA, DestinationPrincipal: apiSA, DestinationNamespace: "default", DestinationService: "api", Method: "DELETE", Path: "/items", DecisionId: "d-1"}},
		Proxies: []*agentv1.Proxy{{Id: "api-1", SpiffeId: apiSA, Service: "api"}, {Id: "web-1", SpiffeId: webSA, Service: "web"}},
	}
	if _, err := api.ReportStats(ctx, rep); err != nil {
		t.Fatal(err)
	}
	bad := &agentv1.StatsReport{EndUnixNanos: time.Now().UnixNano(), IntervalMillis: 10000, Series: []*agentv1.StatsSeries{{Key: &agentv1.StatsKey{Reporter: "destination", Protocol: "http"}}}}
	if _, err := api.ReportStats(ctx, bad); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "destination_service") {
		t.Fatalf("malformed report: %v, want InvalidArgument naming destination_service", err)
	}

	resp := waitStatRows(t, m, "svc")
	want := map[string]bool{"api": true, "web": true}
	for _, r := range resp.Rows {
		if !want[r.Name] {
			t.Errorf("row %s: the agent may not speak for it", r.Name)
		}
		if r.Name != "api" {
			continue
		}
		if r.Requests != 600 || r.Failures != 60 || r.SuccessRate == nil || *r.SuccessRate != 0.9 || r.Meshed != 1 || r.RPS <= 0 {
			t.Errorf("api row %+v", r)
		}
		if r.P99 == nil || *r.P99 != float64(telemetry.UpperBound(telemetry.Bucket(400*time.Millisecond)))/1e6 {
			t.Errorf("api p99 %v, want the 400 ms bucket's bound", r.P99)
		}
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"stat", "svc", "api", "-n", "default"}, []string{"NAME  MESHED  SUCCESS  RPS", "api   1       90.00%"}},
		{[]string{"stat", "subset", "-o", "wide"}, []string{"SUBSET", "v1", "600       60"}},
		{[]string{"stat", "route"}, []string{"ROUTE", "canary"}},
		{[]string{"stat", "workload", apiSA}, []string{apiSA}},
		{[]string{"edges"}, []string{"SRC", webSA + "  api.default  " + apiSA + "  90.00%"}},
	} {
		out, err := sigilStat(t, m, tc.args...)
		if err != nil {
			t.Fatalf("sigil %v: %v: %s", tc.args, err, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("sigil %v lacks %q:\n%s", tc.args, w, out)
			}
		}
		if strings.Contains(out, "db") {
			t.Errorf("sigil %v shows node2's db, which node1's agent may not report:\n%s", tc.args, out)
		}
	}
	d, err := adminv1.NewAdminClient(adminv1.AdminSocket(m.DataDir)).Denials(ctx, "default", 10)
	if err != nil || len(d.Denials) != 1 || d.Denials[0].Path != "/items" || d.Denials[0].DecisionID != "d-1" {
		t.Errorf("denials %+v, %v", d, err)
	}
	for _, args := range [][]string{{"stat", "pods"}, {"stat", "--window", "16m"}} {
		if out, err := sigilStat(t, m, args...); err == nil {
			t.Errorf("sigil %v succeeded: %s", args, out)
		}
	}
}
