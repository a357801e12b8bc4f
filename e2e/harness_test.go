package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binDir holds the binaries built once for all tests.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sigil-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// World-readable so that tests can run a client as another uid.
	os.Chmod(dir, 0o755)
	args := []string{"build", "-o", dir + "/"}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "../cmd/...")...)
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

func bin(name string) string { return filepath.Join(binDir, name) }

// proc is a running binary whose stderr the test can wait on.
type proc struct {
	t    testing.TB
	name string
	cmd  *exec.Cmd
	done chan struct{}

	mu    sync.Mutex
	lines []string
	wake  chan struct{}
}

// start runs a binary and logs its output into the test log.
func start(t testing.TB, name string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin(name), args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, name: name, cmd: cmd, done: make(chan struct{}), wake: make(chan struct{})}
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
		p.stop()
		if t.Failed() {
			p.mu.Lock()
			t.Logf("--- %s output:\n%s", name, strings.Join(p.lines, "\n"))
			p.mu.Unlock()
		}
	})
	return p
}

// waitFor waits until a line of output matches re and returns its submatches.
func (p *proc) waitFor(re string, timeout time.Duration) []string {
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

// output returns everything the process printed so far.
func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		p.t.Fatalf("%s did not exit within %s", p.name, timeout)
		return -1
	}
}

// stop sends SIGTERM and waits; SIGKILL after 10 s.
func (p *proc) stop() {
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

// run runs a command to completion and returns stdout; stderr goes into
// the error.
func run(t testing.TB, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin(name), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

func mustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := run(t, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// mesh is a server with its data dir, and helpers for agents.
type mesh struct {
	t       testing.TB
	dir     string
	dataDir string
	addr    string
	server  *proc
	args    []string
}

const trustDomain = "example.org"

// startMesh starts sigil-server on a free loopback port and waits until
// it serves.
func startMesh(t testing.TB, extra ...string) *mesh {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	m := &mesh{t: t, dir: dir, dataDir: filepath.Join(dir, "server")}
	m.args = append([]string{"run", "--data-dir", m.dataDir, "--trust-domain", trustDomain, "--bind", "127.0.0.1:0"}, extra...)
	m.startServer()
	return m
}

func (m *mesh) startServer() {
	m.t.Helper()
	args := m.args
	if m.addr != "" {
		// A restart keeps the port agents know.
		args = append(append([]string(nil), args...), "--bind", m.addr)
	}
	m.server = start(m.t, "sigil-server", args...)
	m.addr = m.server.waitFor(`"msg":"sigil-server running".*"agent_api":"([^"]+)"`, 30*time.Second)[1]
}

func (m *mesh) admin(args ...string) string {
	m.t.Helper()
	return mustRun(m.t, "sigil-server", append(args, "--data-dir", m.dataDir)...)
}

func (m *mesh) token(node string) string {
	return strings.TrimSpace(m.admin("token", "generate", "--node", node))
}

func agentID(node string) string {
	return "spiffe://" + trustDomain + "/sigil/agent/join_token/" + node
}

// entry creates an entry and returns its ID.
func (m *mesh) entry(node, spiffeID string, extra ...string) string {
	m.t.Helper()
	out := m.admin(append([]string{"entry", "create", "--parent-id", agentID(node), "--spiffe-id", spiffeID}, extra...)...)
	match := regexp.MustCompile(`Entry ID\s+:\s+(\S+)`).FindStringSubmatch(out)
	if match == nil {
		m.t.Fatalf("no entry ID in %q", out)
	}
	return match[1]
}

type agentProc struct {
	*proc
	dataDir string
	socket  string
}

func (m *mesh) bundleFile() string {
	path := filepath.Join(m.dir, "bundle.pem")
	if err := os.WriteFile(path, []byte(m.admin("bundle", "show")), 0o644); err != nil {
		m.t.Fatal(err)
	}
	return path
}

// startAgent attests a new agent for node and waits until it serves.
func (m *mesh) startAgent(node string) *agentProc {
	m.t.Helper()
	dir := filepath.Join(m.dir, "agent-"+node)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		m.t.Fatal(err)
	}
	a := &agentProc{dataDir: filepath.Join(dir, "data"), socket: filepath.Join(dir, "agent.sock")}
	a.proc = start(m.t, "sigil-agent", "run", "--server", m.addr, "--trust-bundle", m.bundleFile(),
		"--join-token", m.token(node), "--data-dir", a.dataDir, "--socket", a.socket)
	a.waitFor(`"msg":"sigil-agent running"`, 30*time.Second)
	return a
}
