package e2e

import (
	"compress/gzip"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/auditstream"
	"github.com/sigil-mesh/sigil/auditstream/export"
	"github.com/sigil-mesh/sigil/e2e/harness"
)

// opaLogReceiver is an OPA decision-log receiver on a fixed loopback
// address that can be taken down (its listener closed: connections are
// refused) and brought back on the same address.
type opaLogReceiver struct {
	t    *testing.T
	addr string
	mu   sync.Mutex
	recs []auditstream.Record
	srv  *http.Server
	wake chan struct{}
}

func startOPALogReceiver(t *testing.T) *opaLogReceiver {
	r := &opaLogReceiver{t: t, wake: make(chan struct{})}
	r.up()
	t.Cleanup(r.down)
	return r
}

func (r *opaLogReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Header.Get("Content-Encoding") != "gzip" || req.Header.Get("Content-Type") != "application/json" {
		r.t.Errorf("upload with Content-Encoding %q, Content-Type %q", req.Header.Get("Content-Encoding"), req.Header.Get("Content-Type"))
	}
	zr, err := gzip.NewReader(req.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var recs []auditstream.Record
	if err := json.NewDecoder(zr).Decode(&recs); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.recs = append(r.recs, recs...)
	close(r.wake)
	r.wake = make(chan struct{})
	r.mu.Unlock()
}

func (r *opaLogReceiver) up() {
	addr := r.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	for range 50 { // the port was ours a moment ago; the kernel may lag
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		r.t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	r.srv = &http.Server{Handler: r}
	go r.srv.Serve(ln)
}

func (r *opaLogReceiver) down() { r.srv.Close() }

// received returns what arrived so far and a channel closed at the next
// upload.
func (r *opaLogReceiver) received() ([]auditstream.Record, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]auditstream.Record(nil), r.recs...), r.wake
}

// waitDecisions returns what arrived once it holds n distinct decisions
// of writers of identity id, failing the test after within.
func (r *opaLogReceiver) waitDecisions(t *testing.T, id string, n int, within time.Duration) []auditstream.Record {
	t.Helper()
	deadline := time.After(within)
	for {
		recs, wake := r.received()
		if len(decisionIDs(recs, id)) >= n {
			return recs
		}
		select {
		case <-wake:
		case <-deadline:
			t.Fatalf("%d of %d decisions arrived in %s", len(decisionIDs(recs, id)), n, within)
		}
	}
}

// auditOutage is how long the receiver is down: 30 s in CI, shorter for
// local runs with SIGIL_E2E_AUDIT_OUTAGE=5s.
func auditOutage(t *testing.T) time.Duration {
	if v := os.Getenv("SIGIL_E2E_AUDIT_OUTAGE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SIGIL_E2E_AUDIT_OUTAGE: %v", err)
		}
		return d
	}
	return 30 * time.Second
}

// The audit stream end to end, under faults: decisions of api's sidecar
// go through its agent to the server, whose HTTP exporter (OPA's
// decision-log upload API) posts them with the CA's events to a receiver
// that is down for 30 s in the middle; the server and the sidecar are
// each SIGKILLed and restarted once meanwhile. At the end every decision
// has arrived (the ids are those of every request the client got an
// answer to, as many as the sidecar counted), each writer's chain is
// whole with no gap, the sidecars' SVID issuance is there, no token left
// the sidecar, and duplicates are only whole re-sent batches of the
// server's exporter (the at-least-once window of docs/audit.md).
func TestAuditExportSurvivesReceiverOutageAndKills(t *testing.T) {
	t.Parallel()
	outage := auditOutage(t)
	recv := startOPALogReceiver(t)
	m, webAgent, apiAgent, policyDir, webApp, apiApp := startAuditMesh(t, "--audit-export", "http://"+recv.addr+"/logs")
	apiInbound := freeAddr(t)
	apiArgs := []string{"--inbound", apiInbound, "--audit-spool-dir", filepath.Join(m.Dir, "api-spool")}
	api := harness.StartProxy(t, apiAgent, "api", apiApp, policyDir, apiArgs...)
	web := harness.StartProxy(t, webAgent, "web", webApp, policyDir, "--upstream", "api="+apiInbound+"@"+apiSA,
		"--audit-spool-dir", filepath.Join(m.Dir, "web-spool"))

	// One request at a time, so none is in flight when a process is
	// killed: each answer from api's sidecar (200 allowed, 403 denied) is
	// one decision, and nothing else is.
	answered := 0
	send := func(n int) {
		t.Helper()
		for i := range n {
			method := http.MethodGet
			if i%4 == 3 {
				method = http.MethodDelete // denied by the policy
			}
			req, _ := http.NewRequest(method, "http://"+web.Outbound+"/hello", nil)
			req.Host = "api"
			req.Header.Set("Authorization", "Bearer audit-e2e-secret-token")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				continue
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusForbidden {
				answered++
			}
		}
	}
	decided := func(p *harness.ProxyProc) float64 {
		_, page := getStatus(t, "http://"+p.Admin+"/metrics")
		return metric(t, page, `sigil_policy_decisions_total{result="allow"}`) + metric(t, page, `sigil_policy_decisions_total{result="deny"}`)
	}

	send(30)
	recv.down()
	downAt := time.Now()
	send(30)

	m.Server.Signal(os.Kill)
	m.Server.Wait(10 * time.Second)
	send(10) // the server is gone: decisions wait in the sidecar's spool
	m.StartServer()
	send(20)

	counted := decided(api)
	api.Signal(os.Kill)
	api.Wait(10 * time.Second)
	api = harness.StartProxy(t, apiAgent, "api", apiApp, policyDir, apiArgs...)
	waitStatus(t, "http://"+api.Admin+"/ready", http.StatusOK, 30*time.Second)
	send(30)
	counted += decided(api)
	if answered == 0 || float64(answered) != counted {
		t.Fatalf("the client got %d answers from api's sidecar, which counted %v decisions", answered, counted)
	}

	time.Sleep(time.Until(downAt.Add(outage))) // the outage the test is about: no signal to wait for
	recv.up()

	// Wait for every decision to arrive.
	recs := recv.waitDecisions(t, apiSA, answered, 45*time.Second)

	if ids := decisionIDs(recs, apiSA); len(ids) != answered {
		t.Fatalf("%d distinct decisions arrived, %d requests were answered", len(ids), answered)
	}
	dups := checkChains(t, recs)
	t.Logf("%d answered requests, %d records arrived (%d duplicates)", answered, len(recs), dups)
	// At least once: the server's exporter re-sends a batch that a killed
	// server delivered without saving its cursor, and a batch it had
	// partly posted when the receiver went away. No more.
	if dups > 2*export.MaxBatchRecords {
		t.Fatalf("%d duplicate records, more than the at-least-once window allows", dups)
	}
	issued := map[string]bool{}
	for _, r := range recs {
		if r.Sigil.Type == "x509svid.issued" {
			issued[r.Sigil.Subject] = true
		}
		if r.Sigil.Type == auditstream.TypeDecision {
			if strings.Contains(string(r.Input), "audit-e2e-secret-token") {
				t.Fatalf("a token left the sidecar: %s", r.Input)
			}
			if len(r.Erased) == 0 || r.Erased[0] != "/input/request/headers/authorization" {
				t.Fatalf("decision %s: erased %v", r.DecisionID, r.Erased)
			}
		}
	}
	if !issued[webSA] || !issued[apiSA] {
		t.Fatalf("issuance of the sidecars' SVIDs not exported: %v", issued)
	}
}

// decisionIDs are the distinct decision ids of writer id's records.
func decisionIDs(recs []auditstream.Record, id string) map[string]bool {
	out := map[string]bool{}
	for _, r := range recs {
		if r.Sigil.Type == auditstream.TypeDecision && strings.HasPrefix(r.Sigil.Writer, id+"#") {
			out[r.DecisionID] = true
		}
	}
	return out
}

// checkChains fails unless every writer's records form a whole chain
// from seq 1 with no gap record, and returns how many records arrived
// more than once (each copy identical to the first).
func checkChains(t *testing.T, recs []auditstream.Record) int {
	t.Helper()
	byWriter := map[string]map[int64]auditstream.Record{}
	dups := 0
	for _, r := range recs {
		if err := auditstream.Check(r); err != nil {
			t.Fatal(err)
		}
		w := byWriter[r.Sigil.Writer]
		if w == nil {
			w = map[int64]auditstream.Record{}
			byWriter[r.Sigil.Writer] = w
		}
		if first, ok := w[r.Sigil.Seq]; ok {
			if first.Sigil.Hash != r.Sigil.Hash {
				t.Fatalf("writer %s seq %d arrived twice with different content", r.Sigil.Writer, r.Sigil.Seq)
			}
			dups++
			continue
		}
		w[r.Sigil.Seq] = r
	}
	for writer, w := range byWriter {
		seqs := make([]int64, 0, len(w))
		for s := range w {
			seqs = append(seqs, s)
		}
		sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
		prev := ""
		for i, s := range seqs {
			r := w[s]
			if s != int64(i+1) {
				t.Fatalf("writer %s: seq %d missing (next arrived: %d)", writer, i+1, s)
			}
			if r.Sigil.Prev != prev {
				t.Fatalf("writer %s: broken link before seq %d", writer, s)
			}
			if r.Sigil.Type == auditstream.TypeGap {
				t.Fatalf("writer %s: a gap of %d records", writer, r.Sigil.Lost)
			}
			prev = r.Sigil.Hash
		}
	}
	return dups
}

// Fail-closed recording (--audit-failure-mode-allow=false): a request
// whose decision cannot be appended to the spool (here: full) is denied
// with 503 and counted; by default it is served and the loss is counted
// (and becomes a gap record in the chain once the spool has room).
func TestAuditFailClosedDeniesUnrecordedRequests(t *testing.T) {
	t.Parallel()
	m, webAgent, apiAgent, policyDir, webApp, apiApp := startAuditMesh(t)
	for _, tt := range []struct {
		failureModeAllow string
		want             int
	}{
		{"false", http.StatusServiceUnavailable},
		{"true", http.StatusOK},
	} {
		api := harness.StartProxy(t, apiAgent, "api", apiApp, policyDir, "--audit-spool-max-bytes", "1",
			"--audit-failure-mode-allow="+tt.failureModeAllow, "--audit-spool-dir", filepath.Join(m.Dir, "spool-"+tt.failureModeAllow))
		web := harness.StartProxy(t, webAgent, "web", webApp, policyDir, "--upstream", "api="+api.Inbound+"@"+apiSA,
			"--audit-spool-dir", filepath.Join(m.Dir, "web-spool-"+tt.failureModeAllow))
		req, _ := http.NewRequest(http.MethodGet, "http://"+web.Outbound+"/hello", nil)
		req.Host = "api"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Fatalf("--audit-failure-mode-allow=%s with a full spool: %d, want %d", tt.failureModeAllow, resp.StatusCode, tt.want)
		}
		_, page := getStatus(t, "http://"+api.Admin+"/metrics")
		// The caller's sidecar retries a 503 (Istio's default retry policy),
		// each try a decision of its own.
		unrecorded := metric(t, page, `sigil_audit_unrecorded_decisions_total{reason="full"}`)
		if unrecorded < 1 || metricSum(page, "sigil_policy_decisions_total") != unrecorded {
			t.Fatalf("%v unrecorded decisions, not one per decision", unrecorded)
		}
		if v := metric(t, page, "sigil_audit_dropped_records_total"); v != unrecorded {
			t.Fatalf("dropped records %v, unrecorded decisions %v", v, unrecorded)
		}
		api.Stop()
		web.Stop()
	}
}

// metricSum is the sum of every series of a metric in a Prometheus text
// page (0 when it has none yet).
func metricSum(page, name string) float64 {
	sum := 0.0
	for _, m := range regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(name)+`(?:\{[^}]*\})? (\S+)$`).FindAllStringSubmatch(page, -1) {
		v, _ := strconv.ParseFloat(m[1], 64)
		sum += v
	}
	return sum
}

// A server without --audit-export discards decisions, and the sidecars
// learn it from the first ack: they stop recording (no record's CPU per
// request for nothing), and requests keep flowing.
func TestAuditRecordingPausedWithoutServerExport(t *testing.T) {
	t.Parallel()
	m, webAgent, apiAgent, policyDir, webApp, apiApp := startAuditMesh(t)
	api, call := startWebToAPI(t, m, webAgent, apiAgent, policyDir, webApp, apiApp)
	call()
	// The first batch goes out within the shipper's linger (1 s); its ack
	// says the server discarded it.
	deadline := time.Now().Add(15 * time.Second)
	for metricValue(t, api.Admin, `^sigil_audit_recording_paused `) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("api's sidecar never paused recording against a server without --audit-export")
		}
		time.Sleep(100 * time.Millisecond) // polling a metric: no event to wait on
	}
	before := metricValue(t, api.Admin, `^sigil_audit_appended_records_total `)
	for range 20 {
		call()
	}
	if after := metricValue(t, api.Admin, `^sigil_audit_appended_records_total `); after != before {
		t.Fatalf("%v records appended while paused, want none", after-before)
	}
}

// startWebToAPI starts api's and web's sidecars (spools under m.Dir,
// decisions to their agents) and returns api's and a call from web to
// api that must answer 200.
func startWebToAPI(t *testing.T, m *harness.Mesh, webAgent, apiAgent *harness.AgentProc, policyDir, webApp, apiApp string) (*harness.ProxyProc, func()) {
	api := harness.StartProxy(t, apiAgent, "api", apiApp, policyDir, "--audit-spool-dir", filepath.Join(m.Dir, "spool-api"))
	web := harness.StartProxy(t, webAgent, "web", webApp, policyDir, "--upstream", "api="+api.Inbound+"@"+apiSA,
		"--audit-spool-dir", filepath.Join(m.Dir, "spool-web"))
	call := func() {
		req, _ := http.NewRequest(http.MethodGet, "http://"+web.Outbound+"/hello", nil)
		req.Host = "api"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	return api, call
}

// startAuditMesh starts a server with serverFlags, web's agent (node1) and
// api's agent (node2) with entries for both, their apps, and the
// web-to-api policy in policyDir: the mesh every audit export test sends
// its requests through.
func startAuditMesh(t *testing.T, serverFlags ...string) (m *harness.Mesh, webAgent, apiAgent *harness.AgentProc, policyDir, webApp, apiApp string) {
	t.Helper()
	m = harness.StartMesh(t, serverFlags...)
	m.Entry("node1", webSA, "--selector", "unix:uid:"+myUID)
	m.Entry("node2", apiSA, "--selector", "unix:uid:"+myUID)
	webAgent, apiAgent = m.StartAgent("node1"), m.StartAgent("node2")
	policyDir = filepath.Join(m.Dir, "policy")
	if err := os.MkdirAll(policyDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(policyDir, "authz.rego"), []byte(webToAPIPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	_, webApp = harness.StartApp(t, "web")
	_, apiApp = harness.StartApp(t, "api")
	return m, webAgent, apiAgent, policyDir, webApp, apiApp
}

// A sidecar paused against a server without --audit-export resumes
// recording once the server is restarted with an exporter: within the
// probe interval (10 s) plus the agent's reconnection, and its chain as
// exported links from its first record on (it starts after seq 1: the
// records sealed before the pause were discarded by the old server).
func TestAuditRecordingResumesWhenServerExports(t *testing.T) {
	t.Parallel()
	recv := startOPALogReceiver(t)
	m, webAgent, apiAgent, policyDir, webApp, apiApp := startAuditMesh(t)
	api, call := startWebToAPI(t, m, webAgent, apiAgent, policyDir, webApp, apiApp)
	waitPaused := func(want float64, within time.Duration) time.Duration {
		start := time.Now()
		for metricValue(t, api.Admin, `^sigil_audit_recording_paused `) != want {
			if time.Since(start) > within {
				t.Fatalf("sigil_audit_recording_paused not %v after %s", want, within)
			}
			time.Sleep(100 * time.Millisecond) // polling a metric: no event to wait on
		}
		return time.Since(start)
	}
	call()
	waitPaused(1, 15*time.Second)

	m.Server.Signal(os.Kill)
	m.Server.Wait(10 * time.Second)
	m.AddServerArgs("--audit-export", "http://"+recv.addr+"/logs")
	m.StartServer()
	took := waitPaused(0, 30*time.Second)
	t.Logf("recording resumed %s after the server restarted with an exporter", took)

	const n = 10
	for range n {
		call()
	}
	recs := recv.waitDecisions(t, apiSA, n, 30*time.Second)
	var v auditstream.Verifier
	for i, r := range recs {
		v.Add(r, auditstream.Pos{File: "received", Line: i + 1, InArray: true})
	}
	for _, w := range v.Report() {
		if w.Broken != nil {
			t.Fatalf("writer %s: chain broken at seq %d: %s", w.Writer, w.Broken.Seq, w.Broken.Reason)
		}
		if len(w.Gaps) != 0 {
			t.Fatalf("writer %s: %d gap records across the pause", w.Writer, len(w.Gaps))
		}
	}
}
