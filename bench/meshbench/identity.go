package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sigil-mesh/sigil/agent/svid"
	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

type identityResult struct {
	Workloads     int     `json:"workloads"`
	Agents        int     `json:"agents"`
	WallSeconds   float64 `json:"renewal_storm_wall_seconds"`
	SVIDsPerSec   float64 `json:"svids_per_second"`
	ServerCPUSecs float64 `json:"server_cpu_seconds"`
	ServerCores   float64 `json:"server_cores_during_storm"`
}

type memoryResult struct {
	IdleProxyMB  float64 `json:"idle_proxy_rss_mb"`
	IdleAnonMB   float64 `json:"idle_proxy_rss_anon_mb"` // private: heap, stacks
	IdleFileMB   float64 `json:"idle_proxy_rss_file_mb"` // pages of the executable, shared with the page cache
	AgentMB      float64 `json:"agent_rss_mb_1000_workloads"`
	AgentIdleMB  float64 `json:"agent_rss_mb_idle"`
	AgentEntries int     `json:"agent_entries"`
}

// simAgent is an attested agent driven directly over the agent API.
type simAgent struct {
	api     agentv1.AgentClient
	entries []string
}

// identity is scenario 6: a renewal storm of 100 agents × 100 workloads,
// every agent sending its batch at once.
func (e *env) identity(ctx context.Context, rep *report) error {
	const agents, per = 100, 100
	admin := adminv1.NewAdminClient(e.admin)
	td := spiffeid.RequireTrustDomainFromString("example.org")
	roots, err := x509bundle.Load(td, e.bundleFile)
	if err != nil {
		return err
	}
	serverID := spiffeid.RequireFromString("spiffe://example.org/sigil/server")
	addr := fieldAfter(mustLine(e.server, `"sigil-server running"`), `"agent_api":"`, `"`)
	if addr == "" {
		return fmt.Errorf("no agent API address in the server's log")
	}
	sims := make([]*simAgent, agents)
	log := func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
	log("identity: attesting %d agents and creating %d entries", agents, agents*per)
	var wg sync.WaitGroup
	errs := make(chan error, agents)
	sem := make(chan struct{}, 4)
	for i := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			node := "storm" + strconv.Itoa(i)
			tok, err := admin.CreateJoinToken(ctx, node, 10*time.Minute)
			if err != nil {
				errs <- err
				return
			}
			key, csr := newCSR()
			anon, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsconfig.TLSClientConfig(roots, tlsconfig.AuthorizeID(serverID)))))
			if err != nil {
				errs <- err
				return
			}
			resp, err := agentv1.NewAgentClient(anon).Attest(ctx, &agentv1.AttestRequest{JoinToken: tok.Token, Csr: csr})
			anon.Close()
			if err != nil {
				errs <- err
				return
			}
			var certs []*x509.Certificate
			for _, der := range resp.GetSvid().GetCertChain() {
				c, _ := x509.ParseCertificate(der)
				certs = append(certs, c)
			}
			svid := &x509svid.SVID{ID: spiffeid.RequireFromString(resp.GetSvid().GetSpiffeId()), Certificates: certs, PrivateKey: key}
			cfg := tlsconfig.MTLSClientConfig(svid, roots, tlsconfig.AuthorizeID(serverID))
			cfg.MinVersion = tls.VersionTLS13
			conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
			if err != nil {
				errs <- err
				return
			}
			sa := &simAgent{api: agentv1.NewAgentClient(conn)}
			for j := range per {
				ent, err := admin.CreateEntry(ctx, adminv1.EntryRequest{SPIFFEID: fmt.Sprintf("spiffe://example.org/ns/storm/sa/w%d-%d", i, j),
					ParentID: "spiffe://example.org/sigil/agent/join_token/" + node, Selectors: []string{"unix:uid:" + strconv.Itoa(4000000+j)}})
				if err != nil {
					errs <- err
					return
				}
				sa.entries = append(sa.entries, ent.ID)
			}
			sims[i] = sa
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	// CSRs are made beforehand: the storm measures the server.
	reqs := make([]*agentv1.BatchNewX509SVIDRequest, agents)
	for i, sa := range sims {
		req := &agentv1.BatchNewX509SVIDRequest{}
		for _, id := range sa.entries {
			_, csr := newCSR()
			req.Params = append(req.Params, &agentv1.X509SVIDParams{EntryId: id, Csr: csr})
		}
		reqs[i] = req
	}
	log("identity: renewal storm")
	cpu0 := cpuTicks(e.server.pid())
	start := time.Now()
	var failed error
	var mu sync.Mutex
	for i, sa := range sims {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := sa.api.BatchNewX509SVID(ctx, reqs[i])
			if err == nil && resp.GetResults()[0].GetError() != "" {
				err = fmt.Errorf("%s", resp.GetResults()[0].GetError())
			}
			if err != nil {
				mu.Lock()
				failed = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start).Seconds()
	if failed != nil {
		return failed
	}
	cpu := float64(cpuTicks(e.server.pid())-cpu0) / 100
	rep.Identity = identityResult{Workloads: agents * per, Agents: agents, WallSeconds: wall, SVIDsPerSec: float64(agents*per) / wall, ServerCPUSecs: cpu, ServerCores: cpu / wall}
	log("identity: %d SVIDs in %.2fs (%.0f/s), server CPU %.2fs", agents*per, wall, rep.Identity.SVIDsPerSec, cpu)
	return nil
}

func newCSR() (*ecdsa.PrivateKey, []byte) {
	key, csr, _ := svid.NewKeyAndCSR()
	return key, csr
}

func mustLine(p *proc, substr string) string {
	line, _ := p.waitLog(substr, time.Second)
	return line
}

// agentMemory is scenario 8's agent half: the bench agent's RSS idle, then
// holding 1000 workloads' SVIDs (and keys).
func (e *env) agentMemory(ctx context.Context, rep *report) error {
	admin := adminv1.NewAdminClient(e.admin)
	rep.Memory.AgentIdleMB = rssMB(e.agent.pid())
	const n = 1000
	for i := range n {
		if _, err := admin.CreateEntry(ctx, adminv1.EntryRequest{SPIFFEID: fmt.Sprintf("spiffe://example.org/ns/mem/sa/w%d", i),
			ParentID: "spiffe://example.org/sigil/agent/join_token/bench", Selectors: []string{"unix:uid:" + strconv.Itoa(5000000+i)}}); err != nil {
			return err
		}
	}
	// The agent signs every entry of its node; wait until the audit trail
	// shows all of them issued.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		b, _ := os.ReadFile(e.dir + "/server/audit.log")
		if strings.Count(string(b), `"subject":"spiffe://example.org/ns/mem/sa/`) >= 2*n {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the agent did not get its %d SVIDs in time", n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(time.Second)
	rep.Memory.AgentMB, rep.Memory.AgentEntries = rssMB(e.agent.pid()), n
	return nil
}
