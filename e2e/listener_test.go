package e2e

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/e2e/harness"
)

// startProxyWithFDLimit starts sigil-proxy like harness.StartProxy, with
// its open-file limit (soft and hard) set to fds.
func startProxyWithFDLimit(t *testing.T, fds int, agent *harness.AgentProc, service, app, policy string, extra ...string) *harness.ProxyProc {
	t.Helper()
	args := append([]string{"-c", `ulimit -n "$1" && shift && exec "$@"`, "sh", strconv.Itoa(fds), harness.Bin("sigil-proxy"),
		"run", "--socket", agent.Socket, "--service", service, "--app", app, "--policy", policy,
		"--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0"}, extra...)
	p := &harness.ProxyProc{Proc: harness.StartCmd(t, "sigil-proxy-"+service, exec.Command("sh", args...))}
	m := p.WaitFor(`"msg":"sigil-proxy running".*"inbound":"([^"]+)","outbound":"([^"]+)","admin":"([^"]+)"`, 60*time.Second)
	p.Inbound, p.Outbound, p.Admin = m[1], m[2], m[3]
	return p
}

// hold opens n plain TCP connections to addr (no TLS, nothing sent) and
// returns them; the caller closes them.
func hold(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %d: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	return conns
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
}

// metricValue sums the samples of a metric whose line matches re.
func metricValue(t *testing.T, admin, re string) float64 {
	t.Helper()
	rx := regexp.MustCompile(re)
	var sum float64
	for _, l := range strings.Split(httpGet(t, "http://"+admin+"/metrics"), "\n") {
		if rx.MatchString(l) {
			f := strings.Fields(l)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum
}

func readyStatus(admin string) (int, string) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + admin + "/ready")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitServed retries a GET through web's outbound to api until it is served.
func waitServed(t *testing.T, outbound string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		code, body, _ := runCurl("-m", "5", "-x", "http://"+outbound, "http://api/hello")
		if code == 200 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("api not served again within %s: %d %s", within, code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitAccepting waits until the inbound listener at addr accepts a new
// connection and handshakes: a client without a certificate gets the TLS
// alert, where a dead listener leaves it waiting in the kernel's backlog.
// (Pooled connections between sidecars would hide a dead listener.)
func waitAccepting(t *testing.T, addr string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(3 * time.Second))
			tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
			err = tc.Handshake()
			if err == nil {
				// TLS 1.3: the server's verdict on the missing
				// certificate comes with the first read.
				_, err = tc.Read(make([]byte, 1))
			}
			c.Close()
			var ne net.Error
			if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("inbound listener %s does not accept new connections within %s: %v", addr, within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A flood of plain TCP connections past the sidecar's open-file limit
// neither kills its inbound listener nor leaves it unready: by default the
// connection cap refuses the excess (counted) before the limit is reached;
// with a cap set above the limit, accept fails with EMFILE and is retried
// with backoff. Either way the sidecar serves again once the flood goes.
func TestAcceptErrorsDoNotKillListener(t *testing.T) {
	t.Parallel()
	ids := startIdentities(t)
	_, apiApp := harness.StartApp(t, "api")
	const fds = 256
	for _, tc := range []struct {
		name   string
		extra  []string
		emfile bool
	}{
		{name: "default caps refuse the excess"},
		{name: "cap above the fd limit retries EMFILE", extra: []string{"--inbound-max-connections", "1000", "--inbound-max-handshakes", "1000"}, emfile: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := startProxyWithFDLimit(t, fds, ids.api, "api", apiApp, ids.policyDir, tc.extra...)
			web := harness.StartProxy(t, ids.web, "web", "127.0.0.1:1", ids.policyDir, "--upstream", "api="+api.Inbound+"@"+apiSA)
			waitServed(t, web.Outbound, 30*time.Second)

			conns := hold(t, api.Inbound, fds+50)
			if tc.emfile {
				api.WaitFor(`"msg":"accept failed; retrying".*"listener":"inbound".*too many open files`, 30*time.Second)
			} else {
				if n := metricValue(t, api.Admin, `^sigil_listener_connections_refused_total\{listener="inbound",reason="max_(connections|handshakes)"\}`); n < 50 {
					t.Errorf("refused connections counted: %v, want at least 50", n)
				}
				if code, body := readyStatus(api.Admin); code != 200 {
					t.Errorf("/ready during the flood: %d %s", code, body)
				}
				if open := metricValue(t, api.Admin, `^sigil_listener_connections\{listener="inbound"\}`); open > fds {
					t.Errorf("open inbound connections %v above the fd limit %d", open, fds)
				}
			}
			closeAll(conns)

			waitAccepting(t, api.Inbound, 30*time.Second)
			waitServed(t, web.Outbound, 30*time.Second)
			if code, body := readyStatus(api.Admin); code != 200 {
				t.Errorf("/ready after the flood: %d %s", code, body)
			}
			if strings.Contains(api.Output(), "listener stopped") {
				t.Errorf("a listener stopped:\n%s", grepLines(api.Output(), "listener stopped"))
			}
		})
	}
}

// A request body that trickles in (a byte every 400 ms, far below the
// configured minimum rate) is cut off after the grace period and one
// window, though every read comes well within the idle timeout.
func TestSlowBodyBoundedByMinimumRate(t *testing.T) {
	t.Parallel()
	ids := startIdentities(t)
	_, apiApp := harness.StartApp(t, "api")
	api := harness.StartProxy(t, ids.api, "api", apiApp, ids.policyDir)
	web := harness.StartProxy(t, ids.web, "web", "127.0.0.1:1", ids.policyDir, "--upstream", "api="+api.Inbound+"@"+apiSA,
		"--min-request-body-rate", "100", "--min-request-body-grace", "1s")

	// A fast body of the same size goes through (the policy answers 403
	// for a POST: what matters is that the body was read and forwarded).
	code, body := curl(t, "-x", "http://"+web.Outbound, "-X", "POST", "--data-binary", strings.Repeat("x", 64<<10), "http://api/upload")
	if code != 403 {
		t.Fatalf("fast POST: %d %s", code, body)
	}

	c, err := net.Dial("tcp", web.Outbound)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST http://api/upload HTTP/1.1\r\nHost: api\r\nContent-Length: 1000\r\n\r\n")
	start := time.Now()
	cut := make(chan time.Duration, 1)
	go func() {
		// The server's answer or the close ends the read.
		io.Copy(io.Discard, bufio.NewReader(c))
		cut <- time.Since(start)
	}()
	tick := time.NewTicker(400 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case d := <-cut:
			if d > 5*time.Second {
				t.Fatalf("slow body cut after %s, want within about 2s", d)
			}
			return
		case <-tick.C:
			if time.Since(start) > 15*time.Second {
				t.Fatal("a body trickling at 2.5 bytes/s was still being read after 15s")
			}
			c.Write([]byte("x"))
		}
	}
}

// Every opaque TCP tunnel gives its upstream connection back when it ends
// (the per-destination cap would otherwise fill up with dead tunnels).
func TestUpstreamConnectionsReleasedAfterTunnels(t *testing.T) {
	t.Parallel()
	ids := startIdentities(t)
	_, apiApp := harness.StartApp(t, "api")
	api := harness.StartProxy(t, ids.api, "api", apiApp, ids.policyDir)
	web := harness.StartProxy(t, ids.web, "web", "127.0.0.1:1", ids.policyDir, "--upstream", "api="+api.Inbound+"@"+apiSA)
	waitServed(t, web.Outbound, 30*time.Second)
	const tunnels = 30
	for range tunnels {
		if err := tunnelGet(web.Outbound); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		// The pooled HTTP/1.1 connection of waitServed may stay.
		n := metricValue(t, web.Admin, `^sigil_upstream_connections `)
		if n <= 2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v upstream connections open after %d tunnels ended", n, tunnels)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
