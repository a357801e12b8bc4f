package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// setup is one way from the load generator to the backend: direct, or
// through a pair of sidecars.
type setup struct {
	name   string
	target string // where the load generator connects
	host   string // Host header to send ("" for none)
	client *proc  // the caller's sidecar
	server *proc  // the callee's sidecar
	l4     bool   // the pair does not parse HTTP
}

// env is everything the setups share: tools, the Sigil mesh, its SVIDs.
type env struct {
	dir, bin, tools string
	backend         string // HTTP backend (fortio server)
	grpcBackend     string // gRPC backend (demo app, health service)
	server, agent   *proc
	agentSocket     string
	admin           string // admin socket
	certFile        string // SVID chain PEM, for the peers
	keyFile         string
	bundleFile      string
	comboFile       string // chain + key, for HAProxy
	id              string
	policyDir       string
	only            []string // peers measured
	procs           []*proc
}

func (e *env) start(name string, args ...string) (*proc, error) {
	p, err := startProc(e.dir, name, args...)
	if err == nil {
		e.procs = append(e.procs, p)
	}
	return p, err
}

func (e *env) close() {
	for i := len(e.procs) - 1; i >= 0; i-- {
		e.procs[i].stop()
	}
	e.procs = nil
}

func (e *env) sigil(args ...string) (string, error) {
	out, err := runCmd(e.bin+"/sigil-server", append(args, "--data-dir", e.dir+"/server")...)
	return strings.TrimSpace(out), err
}

// startMesh starts sigil-server and one agent with an identity for this
// uid, and writes that identity's SVID out for the peers, as a
// spiffe-helper would.
func (e *env) startMesh(ctx context.Context) error {
	var err error
	if e.server, err = e.start("sigil-server", e.bin+"/sigil-server", "run", "--data-dir", e.dir+"/server", "--trust-domain", "example.org", "--bind", "127.0.0.1:0", "--dashboard", "127.0.0.1:0",
		// An audit stream, as a deployment that exports keeps: without
		// one, sidecars stop recording decisions (docs/audit.md, Flags).
		"--audit-export", "file://"+e.dir+"/audit.jsonl"); err != nil {
		return err
	}
	line, err := e.server.waitLog(`"sigil-server running"`, 30*time.Second)
	if err != nil {
		return err
	}
	addr := regexp.MustCompile(`"agent_api":"([^"]+)"`).FindStringSubmatch(line)[1]
	bundle, err := e.sigil("bundle", "show")
	if err != nil {
		return err
	}
	e.bundleFile = e.dir + "/bundle.pem"
	os.WriteFile(e.bundleFile, []byte(bundle+"\n"), 0o644)
	e.id = "spiffe://example.org/ns/bench/sa/bench"
	// One identity serves every bench service (all sidecars run as this uid).
	services := []string{}
	for _, s := range []string{"api", "api-caller", "apih2", "apih2-caller", "apiloop", "apiloop-caller", "idle", "idle-caller", "grpc", "grpc-caller"} {
		services = append(services, "--service", s)
	}
	if _, err := e.sigil(append([]string{"entry", "create", "--parent-id", "spiffe://example.org/sigil/agent/join_token/bench", "--spiffe-id", e.id, "--selector", "unix:uid:" + strconv.Itoa(os.Getuid())}, services...)...); err != nil {
		return err
	}
	// The token in a 0600 file, never in argv (any local user reads argv).
	tokenFile := e.dir + "/agent.token"
	if _, err := e.sigil("token", "generate", "--node", "bench", "--output", tokenFile); err != nil {
		return err
	}
	e.agentSocket = e.dir + "/agent.sock"
	e.admin = e.dir + "/server/admin.sock"
	if e.agent, err = e.start("sigil-agent", e.bin+"/sigil-agent", "run", "--server", addr, "--trust-bundle", e.bundleFile, "--join-token-file", tokenFile, "--data-dir", e.dir+"/agent", "--socket", e.agentSocket); err != nil {
		return err
	}
	if _, err := e.agent.waitLog(`"sigil-agent running"`, 30*time.Second); err != nil {
		return err
	}
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	svid, err := workloadapi.FetchX509SVID(fctx, workloadapi.WithAddr("unix://"+e.agentSocket))
	if err != nil {
		return fmt.Errorf("fetching the bench SVID: %w", err)
	}
	certs, key, err := svid.Marshal()
	if err != nil {
		return err
	}
	e.certFile, e.keyFile, e.comboFile = e.dir+"/svid.pem", e.dir+"/svid.key", e.dir+"/svid-combo.pem"
	os.WriteFile(e.certFile, certs, 0o644)
	os.WriteFile(e.keyFile, key, 0o600)
	os.WriteFile(e.comboFile, append(append([]byte{}, certs...), key...), 0o600)
	e.policyDir = e.dir + "/policy"
	os.MkdirAll(e.policyDir, 0o755)
	return os.WriteFile(e.policyDir+"/authz.rego", []byte(benchPolicy), 0o644)
}

// benchPolicy is a small, realistic policy: callers of the bench
// namespace may GET and POST.
const benchPolicy = `package sigil.authz

default allow := false

allow if {
	input.source.namespace == "bench"
	input.request.method in {"GET", "POST"}
}

allow if {
	input.source.namespace == "bench"
	input.request.protocol in {"grpc", "tcp"}
}
`

func runCmd(name string, args ...string) (string, error) {
	cmd := execCommand(name, args...)
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(interface{ Stderr() []byte }); ok {
			return "", fmt.Errorf("%s: %w: %s", name, err, ee.Stderr())
		}
		return string(out), fmt.Errorf("%s %v: %w", name, args, err)
	}
	return string(out), nil
}

var proxyRunning = regexp.MustCompile(`"inbound":"([^"]+)","outbound":"([^"]+)","admin":"([^"]+)"`)

// sigilPair starts the callee's sidecar in front of backend and the
// caller's sidecar, which finds it through discovery, both with flags
// besides their own.
func (e *env) sigilPair(ctx context.Context, name, backend string, flags ...string) (*setup, error) {
	api, err := e.start(name+"-server", append([]string{e.bin + "/sigil-proxy", "run", "--socket", e.agentSocket, "--service", name, "--app", backend,
		"--policy", e.policyDir, "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--drain-grace", "0s", "--audit-spool-dir", e.dir + "/" + name + "-server.spool"}, flags...)...)
	if err != nil {
		return nil, err
	}
	if _, err := api.waitLog(`"sigil-proxy running"`, 60*time.Second); err != nil {
		return nil, err
	}
	web, err := e.start(name+"-client", append([]string{e.bin + "/sigil-proxy", "run", "--socket", e.agentSocket, "--service", name + "-caller", "--app", "127.0.0.1:1",
		"--policy", e.policyDir, "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--drain-grace", "0s", "--audit-spool-dir", e.dir + "/" + name + "-client.spool"}, flags...)...)
	if err != nil {
		return nil, err
	}
	line, err := web.waitLog(`"sigil-proxy running"`, 60*time.Second)
	if err != nil {
		return nil, err
	}
	out := proxyRunning.FindStringSubmatch(line)[2]
	// Discovery: wait until the caller's sidecar knows the callee (an
	// unknown service is 502; anything else came from the other side).
	deadline := time.Now().Add(20 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+out+"/", nil)
		req.Host = name
		resp, err := http.DefaultClient.Do(req)
		code, body := 0, ""
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			code, body = resp.StatusCode, string(b)
		}
		if code != 0 && !strings.Contains(body, "unknown service") {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("sigil pair never routed: status %d, %v", code, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return &setup{name: "sigil", target: out, host: name, client: web, server: api}, nil
}

// sigilH2Rule carries HTTP/1.1 between the sidecars of the sigil-h2 pair
// over HTTP/2.
const sigilH2Rule = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: apih2, namespace: bench}\nspec:\n  host: apih2\n  trafficPolicy:\n    connectionPool:\n      http: {h2UpgradePolicy: UPGRADE}\n"

// sigilH2Pair is a Sigil pair whose DestinationRule says h2UpgradePolicy
// UPGRADE: the app's HTTP/1.1 travels between the sidecars over their one
// multiplexed HTTP/2 connection (proxy/h2conn), measured in the same run
// as the default pair (pooled HTTP/1.1 between the sidecars).
func (e *env) sigilH2Pair(ctx context.Context) (*setup, error) {
	rule := e.dir + "/apih2-rule.yaml"
	if err := os.WriteFile(rule, []byte(sigilH2Rule), 0o644); err != nil {
		return nil, err
	}
	if _, err := runCmd(filepath.Join(e.bin, "sigil"), "apply", "-f", rule, "--admin-socket", e.admin); err != nil {
		return nil, fmt.Errorf("applying UPGRADE: %w", err)
	}
	s, err := e.sigilPair(ctx, "apih2", e.backend)
	if s != nil {
		s.name = "sigil-h2"
	}
	return s, err
}

// haproxyPair is two HAProxy processes, one thread each, TLS 1.3 with
// client certificates between them, connection reuse.
func (e *env) haproxyPair(ctx context.Context) (*setup, error) {
	a, b := freePort(), freePort()
	dir := e.dir + "/haproxy"
	os.MkdirAll(dir, 0o755)
	global := "global\n  maxconn 4000\n  nbthread 1\n  ssl-default-bind-options ssl-min-ver TLSv1.3\n  ssl-default-server-options ssl-min-ver TLSv1.3\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  option http-keep-alive\n  http-reuse always\n"
	client := global + fmt.Sprintf("frontend in\n  bind %s\n  default_backend peer\nbackend peer\n  server b %s ssl crt %s ca-file %s verify required\n", a, b, e.comboFile, e.bundleFile)
	server := global + fmt.Sprintf("frontend in\n  bind %s ssl crt %s ca-file %s verify required\n  default_backend app\nbackend app\n  server app %s\n", b, e.comboFile, e.bundleFile, e.backend)
	os.WriteFile(dir+"/a.cfg", []byte(client), 0o644)
	os.WriteFile(dir+"/b.cfg", []byte(server), 0o644)
	srv, err := e.start("haproxy-server", "haproxy", "-db", "-f", dir+"/b.cfg")
	if err != nil {
		return nil, err
	}
	cli, err := e.start("haproxy-client", "haproxy", "-db", "-f", dir+"/a.cfg")
	if err != nil {
		return nil, err
	}
	if err := waitPort(ctx, a); err != nil {
		return nil, err
	}
	return &setup{name: "haproxy", target: a, client: cli, server: srv}, waitPort(ctx, b)
}

// ghostunnelPair is ghostunnel's client and server mode: a SPIFFE-aware
// TLS tunnel (layer 4: it does not parse HTTP).
func (e *env) ghostunnelPair(ctx context.Context) (*setup, error) {
	a, b := freePort(), freePort()
	gt := e.tools + "/ghostunnel"
	// ghostunnel's SPIFFE mode: SVID and bundle straight from Sigil's
	// Workload API, peers checked by SPIFFE ID (not hostname).
	wl := "unix://" + e.agentSocket
	srv, err := e.start("ghostunnel-server", gt, "server", "--listen", b, "--target", e.backend, "--use-workload-api-addr", wl,
		"--allow-uri", e.id, "--quiet=conns")
	if err != nil {
		return nil, err
	}
	cli, err := e.start("ghostunnel-client", gt, "client", "--listen", a, "--target", b, "--use-workload-api-addr", wl,
		"--verify-uri", e.id, "--quiet=conns")
	if err != nil {
		return nil, err
	}
	if err := waitPort(ctx, a); err != nil {
		return nil, err
	}
	return &setup{name: "ghostunnel", target: a, client: cli, server: srv, l4: true}, waitPort(ctx, b)
}

// floorPair is bench/floor: the sidecar's HTTP/1.1 transport (proxy/h1,
// crypto/tls, the peer checked by SPIFFE ID) with none of its features,
// one core each. Sigil against floor is what the features cost; floor
// against nginx is what Go's runtime and crypto/tls cost an HTTP proxy.
// The setup is called name; flags go to both processes (-path for the
// floor-loop setup).
func (e *env) floorPair(ctx context.Context, name string, flags ...string) (*setup, error) {
	a, b := freePort(), freePort()
	bin := e.bin + "/floor"
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("%s missing (make bench builds it: go build -o %s ./bench/floor): %w", bin, bin, err)
	}
	common := append([]string{"-cert", e.certFile, "-key", e.keyFile, "-bundle", e.bundleFile, "-id", e.id}, flags...)
	srv, err := e.start(name+"-server", append([]string{bin, "-mode", "server", "-listen", b, "-upstream", e.backend}, common...)...)
	if err != nil {
		return nil, err
	}
	cli, err := e.start(name+"-client", append([]string{bin, "-mode", "client", "-listen", a, "-upstream", b}, common...)...)
	if err != nil {
		return nil, err
	}
	if err := waitPort(ctx, a); err != nil {
		return nil, err
	}
	return &setup{name: name, target: a, client: cli, server: srv}, waitPort(ctx, b)
}

// stopSetup stops a pair's processes.
func (s *setup) stopPair() {
	if s.client != nil {
		s.client.stop()
	}
	if s.server != nil {
		s.server.stop()
	}
}
