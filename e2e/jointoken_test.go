package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/e2e/harness"
)

// A join token never shows in the agent's command line: the harness (like
// every script in the repo) hands it over in a 0600 file or on stdin. A
// token file others may read is refused, naming the file and its mode; a
// token in argv still works but is warned about.
func TestJoinTokenNotInArgv(t *testing.T) {
	t.Parallel()
	m := harness.StartMesh(t)
	a := m.StartAgent("node1")
	token, err := os.ReadFile(a.TokenFile)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(a.TokenFile); st.Mode().Perm() != 0o600 {
		t.Fatalf("token generate --output wrote mode %04o, want 0600", st.Mode().Perm())
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(a.PID()) + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(cmdline, bytes.TrimSpace(token)) {
		t.Fatalf("the join token is in the agent's command line: %q", cmdline)
	}
	if !bytes.Contains(cmdline, []byte("--join-token-file")) {
		t.Fatalf("agent command line %q", cmdline)
	}

	bundle := m.BundleFile()
	run := func(name string, stdin []byte, args ...string) *harness.Proc {
		cmd := exec.Command(harness.Bin("sigil-agent"), append([]string{"run", "--server", m.Addr, "--trust-bundle", bundle,
			"--data-dir", filepath.Join(m.Dir, name), "--socket", filepath.Join(m.Dir, name+".sock")}, args...)...)
		if stdin != nil {
			cmd.Stdin = bytes.NewReader(stdin)
		}
		return harness.StartCmd(t, "sigil-agent", cmd)
	}

	// Group-readable: refused before it is used, naming file and mode.
	loose := filepath.Join(m.Dir, "loose-token")
	m.TokenFile("node2", loose)
	os.Chmod(loose, 0o640)
	p := run("a2", nil, "--join-token-file", loose)
	if code := p.Wait(30 * time.Second); code == 0 {
		t.Fatal("agent ran with a group-readable token file")
	}
	if out := p.Output(); !strings.Contains(out, loose) || !strings.Contains(out, "0640") {
		t.Fatalf("refusal does not name the file and its mode: %s", out)
	}
	// The refused token was not spent: fixed, the same file attests.
	os.Chmod(loose, 0o600)
	run("a2", nil, "--join-token-file", loose).WaitFor(`sigil-agent running`, 30*time.Second)

	// stdin.
	run("a3", []byte(m.Token("node3")+"\n"), "--join-token-file", "-").WaitFor(`sigil-agent running`, 30*time.Second)

	// argv: still accepted (stable CLI), loudly warned about.
	argv := run("a4", nil, "--join-token", m.Token("node4"))
	argv.WaitFor(`"level":"WARN","msg":"--join-token puts the join token in this process's command line`, 30*time.Second)
	argv.WaitFor(`sigil-agent running`, 30*time.Second)
}
