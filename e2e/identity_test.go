package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"github.com/sigil-mesh/sigil/e2e/harness"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

var myUID = strconv.Itoa(os.Getuid())

func webID() spiffeid.ID { return spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/web") }

func client(t *testing.T, socket string) *workloadapi.Client {
	t.Helper()
	c, err := workloadapi.New(context.Background(), workloadapi.WithAddr("unix://"+socket))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// A go-spiffe client fetches an X.509-SVID and bundle that verify, and a
// JWT-SVID that validates against the JWT bundle, locally and through the
// agent's ValidateJWTSVID.
func TestWorkloadFetchesAndVerifiesSVIDs(t *testing.T) {
	t.Parallel()
	m := harness.StartMesh(t)
	m.Entry("node1", webID().String(), "--selector", "unix:uid:"+myUID)
	a := m.StartAgent("node1")
	c := client(t, a.Socket)
	ctx := ctxT(t, 30*time.Second)

	x509ctx, err := c.FetchX509Context(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(x509ctx.SVIDs) != 1 || x509ctx.SVIDs[0].ID != webID() {
		t.Fatalf("SVIDs = %v", x509ctx.SVIDs)
	}
	svid := x509ctx.SVIDs[0]
	id, _, err := x509svid.Verify(svid.Certificates, x509ctx.Bundles)
	if err != nil || id != webID() {
		t.Fatalf("verify: %s %v", id, err)
	}
	if ttl := time.Until(svid.Certificates[0].NotAfter); ttl < 59*time.Minute || ttl > time.Hour {
		t.Fatalf("default TTL %s, want 1h", ttl)
	}
	// The bundle the client got equals what the operator sees.
	roots := m.Admin("bundle", "show")
	b, err := x509ctx.Bundles.GetX509BundleForTrustDomain(webID().TrustDomain())
	if err != nil || len(b.X509Authorities()) == 0 || !strings.Contains(roots, "BEGIN CERTIFICATE") {
		t.Fatalf("bundle: %v %v", b, err)
	}
	bundles, err := c.FetchX509Bundles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := bundles.GetX509BundleForTrustDomain(webID().TrustDomain()); !got.Equal(b) {
		t.Fatal("FetchX509Bundles differs from the bundle in FetchX509SVID")
	}

	jwt, err := c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "api"})
	if err != nil {
		t.Fatal(err)
	}
	if ttl := time.Until(jwt.Expiry); ttl > 5*time.Minute || ttl < 4*time.Minute {
		t.Fatalf("JWT TTL %s, want 5m", ttl)
	}
	jwtBundles, err := c.FetchJWTBundles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := jwtsvid.ParseAndValidate(jwt.Marshal(), jwtBundles, []string{"api"})
	if err != nil || parsed.ID != webID() {
		t.Fatalf("validate: %v %v", parsed, err)
	}
	if _, err := jwtsvid.ParseAndValidate(jwt.Marshal(), jwtBundles, []string{"other"}); err == nil {
		t.Fatal("JWT-SVID validated for another audience")
	}
	validated, err := c.ValidateJWTSVID(ctx, jwt.Marshal(), "api")
	if err != nil || validated.ID != webID() {
		t.Fatalf("ValidateJWTSVID: %v %v", validated, err)
	}
	if _, err := c.FetchJWTSVID(ctx, jwtsvid.Params{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("JWT without audience: %v", err)
	}

	// The agent's own key is 0600 and no private key is in any log.
	st, err := os.Stat(filepath.Join(a.DataDir, "agent_svid.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("agent key: %v %v", st.Mode(), err)
	}
	for _, out := range []string{a.Output(), m.Server.Output()} {
		if strings.Contains(out, "PRIVATE KEY") {
			t.Fatal("a private key appears in a log")
		}
	}
}

// The Workload API refuses calls without the security header.
func TestWorkloadAPIRequiresHeader(t *testing.T) {
	t.Parallel()
	m := harness.StartMesh(t)
	m.Entry("node1", webID().String(), "--selector", "unix:uid:"+myUID)
	a := m.StartAgent("node1")
	conn, err := grpc.NewClient("unix://"+a.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(ctxT(t, 10*time.Second), &workload.X509SVIDRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "workload.spiffe.io") {
		t.Fatalf("without header: %v", err)
	}
}

// With a 20 s TTL a watching client sees at least two renewals and never
// holds an expired SVID; an entry created while it watches reaches it.
func TestRenewalAt20sTTL(t *testing.T) {
	t.Parallel()
	m := harness.StartMesh(t, "--default-x509-ttl", "20s")
	m.Entry("node1", webID().String(), "--selector", "unix:uid:"+myUID)
	a := m.StartAgent("node1")
	w := watch(t, a.Socket)
	w.waitUpdates(t, 3, 35*time.Second)
	w.checkNeverExpired(t)

	// A new entry for the same workload is pushed to the watcher.
	api := spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/api")
	m.Entry("node1", api.String(), "--selector", "unix:uid:"+myUID)
	w.waitFor(t, 10*time.Second, func(u update) bool { return len(u.ids) == 2 })
}

type update struct {
	at      time.Time
	ids     []spiffeid.ID
	serial  string
	expires time.Time
}

type watcher struct {
	mu      sync.Mutex
	updates []update
	errs    []error
	wake    chan struct{}
}

func (w *watcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	u := update{at: time.Now()}
	for _, s := range c.SVIDs {
		u.ids = append(u.ids, s.ID)
	}
	if len(c.SVIDs) > 0 {
		u.serial = c.SVIDs[0].Certificates[0].SerialNumber.String()
		u.expires = c.SVIDs[0].Certificates[0].NotAfter
	}
	w.mu.Lock()
	w.updates = append(w.updates, u)
	close(w.wake)
	w.wake = make(chan struct{})
	w.mu.Unlock()
}

func (w *watcher) OnX509ContextWatchError(err error) {
	w.mu.Lock()
	w.errs = append(w.errs, err)
	close(w.wake)
	w.wake = make(chan struct{})
	w.mu.Unlock()
}

// watch starts a go-spiffe watcher on the socket.
func watch(t *testing.T, socket string) *watcher {
	w := &watcher{wake: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	c := client(t, socket)
	done := make(chan struct{})
	go func() { defer close(done); c.WatchX509Context(ctx, w) }()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

func (w *watcher) waitFor(t *testing.T, timeout time.Duration, ok func(update) bool) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		w.mu.Lock()
		for _, u := range w.updates {
			if ok(u) {
				w.mu.Unlock()
				return
			}
		}
		wake := w.wake
		w.mu.Unlock()
		select {
		case <-wake:
		case <-deadline:
			t.Fatalf("condition not met within %s; updates: %+v", timeout, w.snapshot())
		}
	}
}

func (w *watcher) snapshot() []update {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]update(nil), w.updates...)
}

// waitUpdates waits for n distinct SVIDs (the first and n-1 renewals).
func (w *watcher) waitUpdates(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	seen := map[string]bool{}
	w.waitFor(t, timeout, func(u update) bool {
		seen[u.serial] = true
		return len(seen) >= n
	})
}

// checkNeverExpired: each SVID was replaced before it expired, and the
// last one is still valid.
func (w *watcher) checkNeverExpired(t *testing.T) {
	t.Helper()
	ups := w.snapshot()
	for i, u := range ups {
		if !u.at.Before(u.expires) {
			t.Fatalf("update %d arrived already expired: %+v", i, u)
		}
		if i+1 < len(ups) && !ups[i+1].at.Before(u.expires) {
			t.Fatalf("SVID %s expired at %s before its replacement arrived at %s", u.serial, u.expires, ups[i+1].at)
		}
	}
	if last := ups[len(ups)-1]; !time.Now().Before(last.expires) {
		t.Fatalf("holding an expired SVID: %+v", last)
	}
}

// Stopping and restarting the server does not interrupt workloads: the
// agent serves what it holds, and renewal resumes when the server is back.
func TestServerRestartDoesNotInterruptWorkloads(t *testing.T) {
	t.Parallel()
	m := harness.StartMesh(t, "--default-x509-ttl", "20s")
	m.Entry("node1", webID().String(), "--selector", "unix:uid:"+myUID)
	a := m.StartAgent("node1")
	w := watch(t, a.Socket)
	w.waitUpdates(t, 1, 30*time.Second)

	m.Server.Stop()
	// The server stays down past the SVID's half-life: the agent tries to
	// renew, fails, and keeps serving what it holds.
	a.WaitFor(`svid signing failed; keeping the SVIDs held`, 20*time.Second)
	c := client(t, a.Socket)
	svid, err := c.FetchX509SVID(ctxT(t, 10*time.Second))
	if err != nil || svid.ID != webID() {
		t.Fatalf("fetch with server down: %v %v", svid, err)
	}
	if ttl := time.Until(svid.Certificates[0].NotAfter); ttl <= 0 {
		t.Fatalf("agent served an expired SVID (%s)", ttl)
	}

	m.StartServer()
	// The agent is back on its Sync stream within seconds (its reconnects
	// are capped at 5 s; gRPC's default backoff had it wait up to 35 s).
	m.Server.WaitFor(`"msg":"agent connected"`, 10*time.Second)
	// Renewals continue: two more SVIDs after the restart, none expired.
	restarted := time.Now()
	seen := map[string]bool{}
	w.waitFor(t, 40*time.Second, func(u update) bool {
		if u.at.After(restarted) {
			seen[u.serial] = true
		}
		return len(seen) >= 2
	})
	w.checkNeverExpired(t)
	for _, err := range w.errs {
		t.Errorf("watcher saw an error: %v", err)
	}
}

// A caller whose uid has no entry gets PermissionDenied, not a hang, while
// a caller with an entry on the same socket gets its SVID.
func TestNoEntryIsPermissionDenied(t *testing.T) {
	t.Parallel()
	if os.Getuid() != 0 {
		t.Skip("needs root to run a client as another uid")
	}
	m := harness.StartMesh(t)
	m.Entry("node1", webID().String(), "--selector", "unix:uid:0")
	a := m.StartAgent("node1")
	os.Chmod(filepath.Dir(a.Socket), 0o755)

	// The real go-spiffe client in sigil-agent, run as nobody.
	cmd := exec.Command(harness.Bin("sigil-agent"), "api", "fetch", "x509", "--socket", a.Socket, "--timeout", "20s")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "PermissionDenied") {
		t.Fatalf("uid 65534 got: %v %s", err, out)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("PermissionDenied took %s; it must not hang", took)
	}
	out2 := harness.MustRun(t, "sigil-agent", "api", "fetch", "x509", "--socket", a.Socket)
	if !strings.Contains(out2, webID().String()) {
		t.Fatalf("root got %s", out2)
	}
}

// A join token works once, and an expired one not at all.
func TestJoinTokenIsSingleUse(t *testing.T) {
	t.Parallel()
	m := harness.StartMesh(t)
	tokenFile := filepath.Join(m.Dir, "token1")
	m.TokenFile("node1", tokenFile)
	raw, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(raw))
	bundle := m.BundleFile()
	first := harness.Start(t, "sigil-agent", "run", "--server", m.Addr, "--trust-bundle", bundle, "--join-token-file", tokenFile,
		"--data-dir", filepath.Join(m.Dir, "a1"), "--socket", filepath.Join(m.Dir, "a1.sock"))
	first.WaitFor(`sigil-agent running`, 30*time.Second)

	second := harness.Start(t, "sigil-agent", "run", "--server", m.Addr, "--trust-bundle", bundle, "--join-token-file", tokenFile,
		"--data-dir", filepath.Join(m.Dir, "a2"), "--socket", filepath.Join(m.Dir, "a2.sock"))
	if code := second.Wait(30 * time.Second); code == 0 {
		t.Fatal("second agent with a used token ran")
	}
	if !strings.Contains(second.Output(), "join token already used") {
		t.Fatalf("second agent said: %s", second.Output())
	}

	expired := filepath.Join(m.Dir, "token3")
	m.Admin("token", "generate", "--node", "node3", "--ttl", "1s", "--output", expired)
	time.Sleep(1100 * time.Millisecond) // the condition under test is time passing
	third := harness.Start(t, "sigil-agent", "run", "--server", m.Addr, "--trust-bundle", bundle, "--join-token-file", expired,
		"--data-dir", filepath.Join(m.Dir, "a3"), "--socket", filepath.Join(m.Dir, "a3.sock"))
	if code := third.Wait(30 * time.Second); code == 0 || !strings.Contains(third.Output(), "join token expired") {
		t.Fatalf("expired token: code %d, %s", code, third.Output())
	}
	audit, err := os.ReadFile(filepath.Join(m.DataDir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"type":"token.used"`, `"type":"agent.refused"`, `"type":"agent.attested"`} {
		if !strings.Contains(string(audit), want) {
			t.Errorf("audit log lacks %s", want)
		}
	}
	if strings.Contains(string(audit), token) {
		t.Fatal("the join token itself is in the audit log")
	}
	// The exported trail verifies; a tampered copy does not.
	trail := filepath.Join(m.DataDir, "audit.log")
	if out := harness.MustRun(t, "sigil", "audit", "verify", trail); !strings.Contains(out, ": ok, ") {
		t.Fatalf("audit verify: %s", out)
	}
	tampered := filepath.Join(m.Dir, "tampered.log")
	os.WriteFile(tampered, []byte(strings.Replace(string(audit), `"node":"node1"`, `"node":"node9"`, 1)), 0o600)
	if out, err := harness.Run(t, "sigil", "audit", "verify", tampered); err == nil || !strings.Contains(out, "BROKEN") {
		t.Fatalf("tampered trail: %v %s", err, out)
	}
}

// An agent cannot get an SVID or JWT-SVID for an entry parented to another
// node, and calls without an agent SVID are refused. The client is grpc-go
// with node1's real agent SVID from its data dir.
func TestAgentCannotMintAnotherNodesIdentity(t *testing.T) {
	t.Parallel()
	m := harness.StartMesh(t)
	m.Entry("node1", webID().String(), "--selector", "unix:uid:"+myUID)
	otherEntry := m.Entry("node2", "spiffe://example.org/ns/default/sa/db", "--selector", "unix:uid:"+myUID)
	a1 := m.StartAgent("node1")
	m.StartAgent("node2")

	svid, err := x509svid.Load(filepath.Join(a1.DataDir, "agent_svid.pem"), filepath.Join(a1.DataDir, "agent_svid.key"))
	if err != nil {
		t.Fatal(err)
	}
	roots, err := x509svidBundle(m)
	if err != nil {
		t.Fatal(err)
	}
	serverID := spiffeid.RequireFromString("spiffe://example.org/sigil/server")
	tlsCfg := tlsconfig.MTLSClientConfig(svid, roots, tlsconfig.AuthorizeID(serverID))
	conn, err := grpc.NewClient("passthrough:///"+m.Addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	api := agentv1.NewAgentClient(conn)
	ctx := ctxT(t, 20*time.Second)

	resp, err := api.BatchNewX509SVID(ctx, &agentv1.BatchNewX509SVIDRequest{Params: []*agentv1.X509SVIDParams{{EntryId: otherEntry, Csr: newCSR(t)}}})
	if err != nil {
		t.Fatal(err)
	}
	if r := resp.GetResults()[0]; r.GetSvid() != nil || !strings.Contains(r.GetError(), "not an entry of agent") {
		t.Fatalf("node1 got node2's SVID: %+v", r)
	}
	if _, err := api.NewJWTSVID(ctx, &agentv1.NewJWTSVIDRequest{EntryId: otherEntry, Audience: []string{"x"}}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("JWT for node2's entry: %v", err)
	}

	// No client certificate: only Attest is open, and it wants a token.
	anon, err := grpc.NewClient("passthrough:///"+m.Addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsconfig.TLSClientConfig(roots, tlsconfig.AuthorizeID(serverID)))))
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	_, err = agentv1.NewAgentClient(anon).BatchNewX509SVID(ctx, &agentv1.BatchNewX509SVIDRequest{Params: []*agentv1.X509SVIDParams{{EntryId: otherEntry, Csr: newCSR(t)}}})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("anonymous batch: %v", err)
	}
	// A client certificate from another CA fails the handshake.
	foreign := &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{selfSigned(t)}, MinVersion: tls.VersionTLS13}
	bad, _ := grpc.NewClient("passthrough:///"+m.Addr, grpc.WithTransportCredentials(credentials.NewTLS(foreign)))
	defer bad.Close()
	_, err = agentv1.NewAgentClient(bad).Attest(ctx, &agentv1.AttestRequest{JoinToken: "x"})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("foreign client cert: %v", err)
	}
	audit, _ := os.ReadFile(filepath.Join(m.DataDir, "audit.log"))
	if !strings.Contains(string(audit), `"type":"x509svid.refused"`) {
		t.Fatal("refusal not audited")
	}
}

// Deleting the entry ends the workload's stream with PermissionDenied.
func TestEntryDeleteRevokesWorkloadAccess(t *testing.T) {
	t.Parallel()
	m := harness.StartMesh(t)
	id := m.Entry("node1", webID().String(), "--selector", "unix:uid:"+myUID)
	a := m.StartAgent("node1")
	w := watch(t, a.Socket)
	w.waitUpdates(t, 1, 30*time.Second)
	m.Admin("entry", "delete", "--id", id)
	deadline := time.After(10 * time.Second)
	for {
		w.mu.Lock()
		var got error
		for _, err := range w.errs {
			if status.Code(err) == codes.PermissionDenied {
				got = err
			}
		}
		wake := w.wake
		w.mu.Unlock()
		if got != nil {
			break
		}
		select {
		case <-wake:
		case <-deadline:
			t.Fatalf("no PermissionDenied after delete; errors %v", w.errs)
		}
	}
	if _, err := client(t, a.Socket).FetchX509SVID(ctxT(t, 10*time.Second)); status.Code(errors.Unwrap(err)) != codes.PermissionDenied && status.Code(err) != codes.PermissionDenied {
		t.Fatalf("fetch after delete: %v", err)
	}

}

// TestAgentEvictCutsOffTheNode: after `agent evict` the server refuses
// the agent (its open Sync stream included), the agent drops every
// identity it serves, the eviction is audited, and the node is gone from
// the agent list.
func TestAgentEvictCutsOffTheNode(t *testing.T) {
	t.Parallel()
	m := harness.StartMesh(t)
	m.Entry("node1", webID().String(), "--selector", "unix:uid:"+myUID)
	a := m.StartAgent("node1")
	w := watch(t, a.Socket)
	w.waitUpdates(t, 1, 30*time.Second)

	if _, err := harness.Run(t, "sigil-server", "agent", "evict", "--spiffe-id", "not-an-id", "--data-dir", m.DataDir); err == nil {
		t.Fatal("evict accepted a malformed SPIFFE ID")
	}
	out := m.Admin("agent", "evict", "--spiffe-id", harness.AgentID("node1"))
	if !strings.Contains(out, "Evicted agent "+harness.AgentID("node1")) {
		t.Fatalf("evict: %q", out)
	}
	// The open Sync stream is refused, and the agent fails closed.
	a.WaitFor(`the server refused this agent`, 15*time.Second)
	if _, err := client(t, a.Socket).FetchX509SVID(ctxT(t, 10*time.Second)); status.Code(errors.Unwrap(err)) != codes.PermissionDenied && status.Code(err) != codes.PermissionDenied {
		t.Fatalf("fetch after evict: %v", err)
	}
	if list := m.Admin("agent", "list"); strings.Contains(list, harness.AgentID("node1")) {
		t.Fatalf("evicted agent still listed: %q", list)
	}
	trail, err := os.ReadFile(filepath.Join(m.DataDir, "audit.log"))
	if err != nil || !strings.Contains(string(trail), `"agent.evicted"`) {
		t.Fatalf("audit log lacks agent.evicted (%v)", err)
	}
	// Evicting it again names what is wrong.
	if _, err := harness.Run(t, "sigil-server", "agent", "evict", "--spiffe-id", harness.AgentID("node1"), "--data-dir", m.DataDir); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("second evict: %v", err)
	}
	// A new join token in the agent's token file brings the node back,
	// without restarting the agent.
	m.TokenFile("node1", a.TokenFile)
	a.WaitFor(`"msg":"node re-attested"`, 20*time.Second)
	svid, err := client(t, a.Socket).FetchX509SVID(ctxT(t, 20*time.Second))
	if err != nil || svid.ID != webID() {
		t.Fatalf("fetch after re-attestation: %v %v", svid, err)
	}
}
