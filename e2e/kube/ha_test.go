package kube

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/e2e/harness"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// svidLog records every X.509-SVID a workload is handed, as a go-spiffe
// client watching the agent's Workload API sees them.
type svidLog struct {
	mu      sync.Mutex
	got     []svidSeen
	errs    []error
	changed chan struct{}
}

type svidSeen struct {
	at                  time.Time
	serial              string
	notBefore, notAfter time.Time
}

func (l *svidLog) OnX509ContextUpdate(c *workloadapi.X509Context) {
	if len(c.SVIDs) == 0 {
		return
	}
	leaf := c.SVIDs[0].Certificates[0]
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, svidSeen{at: time.Now(), serial: leaf.SerialNumber.String(), notBefore: leaf.NotBefore, notAfter: leaf.NotAfter})
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *svidLog) OnX509ContextWatchError(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, err)
}

// awaitRenewals waits until n SVIDs have been handed out after since.
func (l *svidLog) awaitRenewals(t *testing.T, since time.Time, n int, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	for {
		l.mu.Lock()
		count := 0
		for _, s := range l.got {
			if s.at.After(since) {
				count++
			}
		}
		changed := l.changed
		l.mu.Unlock()
		if count >= n {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("%d SVIDs handed out since %s, want %d within %s", count, since.Format(time.StampMilli), n, within)
		}
	}
}

// nextRenewal is when the agent renews the newest SVID: at half its life.
func (l *svidLog) nextRenewal() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	last := l.got[len(l.got)-1]
	return last.notBefore.Add(last.notAfter.Sub(last.notBefore) / 2)
}

// gaps returns the moments the workload held no valid SVID: each SVID
// must arrive before the one before it expires, and the last must still
// be valid.
func (l *svidLog) gaps(now time.Time) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for i := 1; i < len(l.got); i++ {
		if prev := l.got[i-1]; !l.got[i].at.Before(prev.notAfter) {
			out = append(out, "SVID "+prev.serial+" expired at "+prev.notAfter.Format(time.StampMilli)+" before the next arrived at "+l.got[i].at.Format(time.StampMilli))
		}
	}
	if n := len(l.got); n > 0 && !now.Before(l.got[n-1].notAfter) {
		out = append(out, "the last SVID expired at "+l.got[n-1].notAfter.Format(time.StampMilli))
	}
	return out
}

// TestHALeaderFailover runs two sigil-server replicas against the real API
// server: one CA in the sigil-ca Secret, one leader on the sigil-server
// Lease. An agent attesting by projected service-account token (k8s_psat,
// as the DaemonSet's) lists both replicas, and a workload renews a 20 s
// SVID every 10 s. SIGKILL of the leader: the other replica leads within
// seconds (the test logs how many), signing continues, no renewal fails
// on the agent, and the workload's SVID never expires. No kubelet runs:
// the test makes the agent's Pod object and its token (TokenRequest), and
// starts the replicas and the agent as processes itself.
func TestHALeaderFailover(t *testing.T) {
	k := harness.StartKube(t)
	k.Namespace("sigil-system", nil)
	const (
		lease = 3 * time.Second
		entry = "web-node1"
	)
	flags := func(pod string) []string {
		return []string{"--kubernetes", "--kubeconfig", k.Kubeconfig, "--k8s-namespace", "sigil-system", "--k8s-pod-name", pod, "--k8s-cluster", psatCluster,
			"--leader-elect-lease-duration", lease.String(), "--leader-elect-renew-deadline", "2s", "--leader-elect-retry-period", "500ms",
			"--default-x509-ttl", "20s",
			// Both replicas run on this host: no webhook, whose port is fixed.
			"--webhook-bind", ""}
	}
	a := harness.StartMesh(t, flags("sigil-server-a")...)
	a.Server.WaitFor(`"msg":"leading: this replica signs"`, 30*time.Second)
	b := harness.StartMesh(t, flags("sigil-server-b")...)
	b.Server.WaitFor(`"msg":"new leader".*"leader":"sigil-server-a_`+regexp.QuoteMeta(a.Addr)+`"`, 30*time.Second)

	// One CA: both replicas serve the same bundle, from the Secret.
	if a.Admin("bundle", "show") != b.Admin("bundle", "show") {
		t.Fatal("the replicas serve different trust bundles")
	}
	sec, err := k.Clients.Core.CoreV1().Secrets("sigil-system").Get(context.Background(), "sigil-ca", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the CA Secret: %v", err)
	}
	if sec.Type != "Opaque" || len(sec.Data["ca-state.json"]) == 0 {
		t.Fatalf("the CA Secret: type %s, data keys %d", sec.Type, len(sec.Data))
	}
	if got := scrape(t, a.Dashboard, "sigil_server_leader"); got != "1" {
		t.Fatalf("leader's sigil_server_leader = %s", got)
	}
	if got := scrape(t, b.Dashboard, "sigil_server_leader"); got != "0" {
		t.Fatalf("follower's sigil_server_leader = %s", got)
	}

	// Hand-made entries live in each replica's registry: the same one,
	// under the same ID, on both, for the node's k8s_psat agent.
	uid := strconv.Itoa(os.Getuid())
	for _, m := range []*harness.Mesh{a, b} {
		m.Admin("entry", "create", "--parent-id", psatAgentID(t, "node1"), "--spiffe-id", "spiffe://"+harness.TrustDomain+"/ns/shop/sa/web",
			"--entry-id", entry, "--selector", "unix:uid:"+uid)
	}
	// A projected token is not single use: the agent attests to either
	// replica, and again to the other after a failover.
	agentPod := k.Pod("sigil-system", "sigil-agent-node1", "sigil-agent", "node1", map[string]string{"app": "sigil-agent"})
	agentProc := startPSATAgent(t, a, k, "node1", "node1", k.TokenFile("sigil-system", "sigil-agent", "sigil-server", agentPod), "--server", b.Addr)
	agent := &harness.AgentProc{Proc: agentProc, Socket: filepath.Join(a.Dir, "agent-node1", "agent.sock"),
		Admin: agentProc.WaitFor(`"msg":"sigil-agent running".*"admin":"([^"]*)"`, 30*time.Second)[1]}
	if !strings.Contains(agent.Output(), `"agent_id":"`+psatAgentID(t, "node1")+`"`) {
		t.Fatalf("the agent did not attest as %s:\n%s", psatAgentID(t, "node1"), agent.Output())
	}

	svids := &svidLog{changed: make(chan struct{})}
	client, err := workloadapi.New(context.Background(), workloadapi.WithAddr("unix://"+agent.Socket))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	watching := make(chan struct{})
	go func() { defer close(watching); _ = client.WatchX509Context(ctx, svids) }()
	t.Cleanup(func() { cancel(); <-watching })
	start := time.Now()
	svids.awaitRenewals(t, start, 2, 40*time.Second) // the first SVID and a renewal

	// The fault is timed, not awaited: the leader dies just before the
	// workload's next renewal, so that renewal falls in the election.
	time.Sleep(time.Until(svids.nextRenewal().Add(-700 * time.Millisecond)))
	killed := time.Now()
	a.Server.Signal(syscall.SIGKILL)
	a.Server.Wait(10 * time.Second)
	led := b.Server.WaitFor(`"time":"([^"]+)".*"msg":"leading: this replica signs"`, 30*time.Second)
	at, err := time.Parse(time.RFC3339Nano, led[1])
	if err != nil {
		t.Fatalf("leader's log time %q: %v", led[1], err)
	}
	took := at.Sub(killed)
	t.Logf("replica b leads %s after the leader was killed (lease duration %s)", took.Round(10*time.Millisecond), lease)
	if took > lease+3*time.Second {
		t.Fatalf("b took %s to lead, want within the lease duration (%s) and a few retry periods", took, lease)
	}
	if got := scrape(t, b.Dashboard, "sigil_server_leader"); got != "1" {
		t.Fatalf("new leader's sigil_server_leader = %s", got)
	}

	// Signing continues on b: two more renewals of the 20 s SVID, i.e.
	// past the life of every SVID issued before the kill.
	svids.awaitRenewals(t, killed, 2, 45*time.Second)
	if gaps := svids.gaps(time.Now()); len(gaps) > 0 {
		t.Fatalf("the workload held no valid SVID: %s", strings.Join(gaps, "; "))
	}
	out := agent.Output()
	for _, failure := range []string{"svid signing failed", "agent svid renewal failed", "svid refused"} {
		if n := strings.Count(out, failure); n > 0 {
			t.Errorf("the agent logged %q %d times across the failover", failure, n)
		}
	}
	if !strings.Contains(out, `"msg":"server replica changed"`) {
		t.Error("the agent never moved to the other replica")
	}
	if got := scrape(t, "http://"+agent.Admin+"/", `sigil_agent_state{state="renewal_failing"}`); got != "0" {
		t.Errorf(`sigil_agent_state{state="renewal_failing"} = %s`, got)
	}
}

// scrape returns the value of the series named (with labels, as printed)
// on base's /metrics.
func scrape(t *testing.T, base, series string) string {
	t.Helper()
	resp, err := http.Get(strings.TrimSuffix(base, "/") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in %s/metrics", series, base)
	return ""
}
