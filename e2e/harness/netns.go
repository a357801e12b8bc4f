package harness

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// NetnsPair makes two network namespaces joined by a veth pair:
// client 10.77.N.1 and server 10.77.N.2. They are removed at cleanup.
// It skips the test when not root or when ip, iptables, curl or setpriv
// is missing.
func NetnsPair(t testing.TB) (client, server, clientIP, serverIP string) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("network namespaces need root")
	}
	for _, tool := range []string{"ip", "iptables", "curl", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (.ci/run installs it)", tool)
		}
	}
	n := rand.IntN(200) + 20
	suffix := fmt.Sprintf("%d%d", n, rand.IntN(1000))
	client, server = "sgc"+suffix, "sgs"+suffix
	clientIP, serverIP = fmt.Sprintf("10.77.%d.1", n), fmt.Sprintf("10.77.%d.2", n)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", client)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", client).Run() })
	run("netns", "add", server)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", server).Run() })
	run("link", "add", "vc"+suffix, "type", "veth", "peer", "name", "vs"+suffix)
	run("link", "set", "vc"+suffix, "netns", client)
	run("link", "set", "vs"+suffix, "netns", server)
	run("-n", client, "addr", "add", clientIP+"/24", "dev", "vc"+suffix)
	run("-n", server, "addr", "add", serverIP+"/24", "dev", "vs"+suffix)
	for _, ns := range []string{client, server} {
		run("-n", ns, "link", "set", "lo", "up")
	}
	run("-n", client, "link", "set", "vc"+suffix, "up")
	run("-n", server, "link", "set", "vs"+suffix, "up")
	return client, server, clientIP, serverIP
}
