// Package harness starts Sigil's real binaries as processes for the e2e
// tests and the benchmarks, and waits on what they print (their readiness
// signals) rather than sleeping.
package harness

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binDir holds the binaries built once for all tests.
var binDir string

// Main builds every binary of cmd/ and the demo app (with -race if race
// is set) into a temporary, world-readable directory, runs the tests and
// cleans up. Call it from TestMain with the path of the module's root.
func Main(m *testing.M, root string, race bool) {
	dir, err := os.MkdirTemp("", "sigil-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// World-readable so that tests can run a client as another uid.
	os.Chmod(dir, 0o755)
	args := []string{"build", "-o", dir + "/"}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, root+"/cmd/...", root+"/demo/sigil-demo-app")...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building binaries:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Bin returns the path of a built binary.
func Bin(name string) string { return filepath.Join(binDir, name) }

// Proc is a running binary whose stderr the test can wait on.
type Proc struct {
	t    testing.TB
	name string
	cmd  *exec.Cmd
	done chan struct{}

	mu    sync.Mutex
	lines []string
	wake  chan struct{}
}

// Start runs a binary and logs its output into the test log.
func Start(t testing.TB, name string, args ...string) *Proc {
	t.Helper()
	return StartCmd(t, name, exec.Command(Bin(name), args...))
}

// StartIn runs a binary inside a network namespace (ip netns exec).
func StartIn(t testing.TB, netns, name string, args ...string) *Proc {
	t.Helper()
	return StartCmd(t, name, exec.Command("ip", append([]string{"netns", "exec", netns, Bin(name)}, args...)...))
}

// StartCmd runs cmd, named name in the test log.
func StartCmd(t testing.TB, name string, cmd *exec.Cmd) *Proc {
	t.Helper()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &Proc{t: t, name: name, cmd: cmd, done: make(chan struct{}), wake: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			close(p.wake)
			p.wake = make(chan struct{})
			p.mu.Unlock()
		}
		cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			p.mu.Lock()
			t.Logf("--- %s output:\n%s", name, strings.Join(p.lines, "\n"))
			p.mu.Unlock()
		}
	})
	return p
}

// WaitFor waits until a line of output matches re and returns its submatches.
func (p *Proc) WaitFor(re string, timeout time.Duration) []string {
	p.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	seen := 0
	for {
		p.mu.Lock()
		for ; seen < len(p.lines); seen++ {
			if m := rx.FindStringSubmatch(p.lines[seen]); m != nil {
				p.mu.Unlock()
				return m
			}
		}
		wake := p.wake
		p.mu.Unlock()
		select {
		case <-wake:
		case <-p.done:
			p.mu.Lock()
			for ; seen < len(p.lines); seen++ {
				if m := rx.FindStringSubmatch(p.lines[seen]); m != nil {
					p.mu.Unlock()
					return m
				}
			}
			p.mu.Unlock()
			p.t.Fatalf("%s exited before printing %q", p.name, re)
		case <-deadline.C:
			p.t.Fatalf("%s did not print %q within %s", p.name, re, timeout)
		}
	}
}

// Output returns everything the process printed so far.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// Wait waits for the process to exit and returns its exit code.
func (p *Proc) Wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		p.t.Fatalf("%s did not exit within %s", p.name, timeout)
		return -1
	}
}

// Stop sends SIGTERM and waits; SIGKILL after 10 s.
func (p *Proc) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// Run runs a command to completion and returns stdout; stderr goes into
// the error.
func Run(t testing.TB, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, Bin(name), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// MustRun is Run that fails the test on error.
func MustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := Run(t, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Mesh is a server with its data dir, and helpers for agents.
type Mesh struct {
	t       testing.TB
	Dir     string
	DataDir string
	Addr    string
	// Dashboard is the dashboard's URL ("http://127.0.0.1:PORT/") from
	// the server's start-up line; "" when it serves none.
	Dashboard string
	Server    *Proc
	args      []string
}

// TrustDomain is the trust domain of every test mesh.
const TrustDomain = "example.org"

// StartMesh starts sigil-server on a free loopback port and waits until
// it serves.
func StartMesh(t testing.TB, extra ...string) *Mesh {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	m := &Mesh{t: t, Dir: dir, DataDir: filepath.Join(dir, "server")}
	// A free port for the dashboard: tests run many servers at once.
	m.args = append([]string{"run", "--data-dir", m.DataDir, "--trust-domain", TrustDomain, "--bind", "127.0.0.1:0", "--dashboard", "127.0.0.1:0"}, extra...)
	m.StartServer()
	return m
}

// StartServer starts (or restarts, on the same port) the server.
func (m *Mesh) StartServer() {
	m.t.Helper()
	args := m.args
	if m.Addr != "" {
		// A restart keeps the port agents know.
		args = append(append([]string(nil), args...), "--bind", m.Addr)
	}
	m.Server = Start(m.t, "sigil-server", args...)
	m.Addr = m.Server.WaitFor(`"msg":"sigil-server running".*"agent_api":"([^"]+)"`, 30*time.Second)[1]
	m.Dashboard = ""
	if d := m.Server.WaitFor(`"msg":"sigil-server running"(?:.*"dashboard":"([^"]*)")?`, time.Second); len(d) > 1 {
		m.Dashboard = d[1]
	}
}

// AddServerArgs adds extra to the flags of the server's next
// StartServer (a restart with, say, an exporter it ran without).
func (m *Mesh) AddServerArgs(extra ...string) {
	m.args = append(m.args, extra...)
}

// Admin runs a sigil-server admin subcommand against this data dir.
func (m *Mesh) Admin(args ...string) string {
	m.t.Helper()
	return MustRun(m.t, "sigil-server", append(args, "--data-dir", m.DataDir)...)
}

// Token generates a join token for node.
func (m *Mesh) Token(node string) string {
	return strings.TrimSpace(m.Admin("token", "generate", "--node", node))
}

// TokenFile writes a new join token for node to path (mode 0600, through
// `sigil-server token generate --output`), the form agents take it in.
func (m *Mesh) TokenFile(node, path string) {
	m.t.Helper()
	m.Admin("token", "generate", "--node", node, "--output", path)
}

// AgentID is the ID of the join-token agent of node.
func AgentID(node string) string {
	return "spiffe://" + TrustDomain + "/sigil/agent/join_token/" + node
}

// Entry creates an entry and returns its ID.
func (m *Mesh) Entry(node, spiffeID string, extra ...string) string {
	m.t.Helper()
	out := m.Admin(append([]string{"entry", "create", "--parent-id", AgentID(node), "--spiffe-id", spiffeID}, extra...)...)
	match := regexp.MustCompile(`Entry ID\s+:\s+(\S+)`).FindStringSubmatch(out)
	if match == nil {
		m.t.Fatalf("no entry ID in %q", out)
	}
	return match[1]
}

// AgentProc is a running sigil-agent with its data dir, socket, join
// token file and admin address (/metrics, /ready).
type AgentProc struct {
	*Proc
	DataDir   string
	Socket    string
	TokenFile string
	Admin     string
}

// BundleFile writes the trust bundle to a file and returns its path.
func (m *Mesh) BundleFile() string {
	path := filepath.Join(m.Dir, "bundle.pem")
	if err := os.WriteFile(path, []byte(m.Admin("bundle", "show")), 0o644); err != nil {
		m.t.Fatal(err)
	}
	return path
}

// StartAgent attests a new agent for node, with extra flags for
// sigil-agent run, and waits until it serves.
func (m *Mesh) StartAgent(node string, extra ...string) *AgentProc {
	m.t.Helper()
	dir := filepath.Join(m.Dir, "agent-"+node)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		m.t.Fatal(err)
	}
	a := &AgentProc{DataDir: filepath.Join(dir, "data"), Socket: filepath.Join(dir, "agent.sock"), TokenFile: filepath.Join(dir, "join-token")}
	// The token goes in a 0600 file, never in argv where any local user
	// could read it.
	m.TokenFile(node, a.TokenFile)
	a.Proc = Start(m.t, "sigil-agent", append([]string{"run", "--server", m.Addr, "--trust-bundle", m.BundleFile(),
		"--join-token-file", a.TokenFile, "--data-dir", a.DataDir, "--socket", a.Socket, "--admin", "127.0.0.1:0"}, extra...)...)
	a.Admin = a.WaitFor(`"msg":"sigil-agent running".*"admin":"([^"]*)"`, 30*time.Second)[1]
	return a
}

// StartApp starts sigil-demo-app on a free loopback port and returns it
// with its address.
func StartApp(t testing.TB, name string, extra ...string) (*Proc, string) {
	t.Helper()
	p := Start(t, "sigil-demo-app", append([]string{"--listen", "127.0.0.1:0", "--name", name}, extra...)...)
	return p, p.WaitFor(`listening on (\S+)`, 30*time.Second)[1]
}

// ProxyProc is a running sigil-proxy and the addresses it bound.
type ProxyProc struct {
	*Proc
	Inbound, Outbound, Admin string
}

// StartProxy starts sigil-proxy for service in front of app, with its
// identity from agent, on free loopback ports unless extra says otherwise,
// and waits until it runs.
func StartProxy(t testing.TB, agent *AgentProc, service, app, policy string, extra ...string) *ProxyProc {
	t.Helper()
	args := []string{"run", "--socket", agent.Socket, "--service", service, "--app", app, "--policy", policy,
		"--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0"}
	if !slices.ContainsFunc(extra, func(a string) bool { return strings.HasPrefix(a, "--audit-spool-dir") }) {
		// On port 0 the sidecar's default spool is named by its pid and
		// outlives it; the test's own directory goes with the test (made
		// before Start, so it is removed after the process is stopped).
		args = append(args, "--audit-spool-dir", t.TempDir())
	}
	// SIGIL_E2E_PROXY_FLAGS runs every sidecar of the suite with more
	// flags, as `make e2e-event-loop` runs it with --inbound-event-loop.
	args = append(args, strings.Fields(os.Getenv("SIGIL_E2E_PROXY_FLAGS"))...)
	p := &ProxyProc{Proc: Start(t, "sigil-proxy", append(args, extra...)...)}
	m := p.WaitFor(`"msg":"sigil-proxy running".*"inbound":"([^"]+)","outbound":"([^"]+)","admin":"([^"]+)"`, 60*time.Second)
	p.Inbound, p.Outbound, p.Admin = m[1], m[2], m[3]
	return p
}

// PID is the process's ID.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) { p.cmd.Process.Signal(sig) }
