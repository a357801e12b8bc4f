package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/e2e/harness"
)

// seriesRE splits a sample line of the Prometheus text format.
var (
	seriesRE = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)$`)
	labelRE  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
)

// sumSeries sums the samples of metric name at admin whose labels include
// every pair of want.
func sumSeries(t *testing.T, admin, name string, want map[string]string) float64 {
	t.Helper()
	var sum float64
	for _, l := range strings.Split(httpGet(t, "http://"+admin+"/metrics"), "\n") {
		m := seriesRE.FindStringSubmatch(l)
		if m == nil || m[1] != name {
			continue
		}
		have := map[string]string{}
		for _, kv := range labelRE.FindAllStringSubmatch(m[2], -1) {
			have[kv[1]] = kv[2]
		}
		ok := true
		for k, v := range want {
			if have[k] != v {
				ok = false
				break
			}
		}
		if ok {
			v, _ := strconv.ParseFloat(m[3], 64)
			sum += v
		}
	}
	return sum
}

// awaitSeries polls until metric name at admin with labels want sums to
// at least min (a metric has no push signal to wait on), and fails after
// timeout.
func awaitSeries(t *testing.T, admin, name string, want map[string]string, min float64, timeout time.Duration) float64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		v := sumSeries(t, admin, name, want)
		if v >= min {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v = %v after %s, want at least %v", name, want, v, timeout, min)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSidecarMetricsInIstioNames: requests and TCP connections through a
// sidecar pair are counted in Istio's standard metrics (sigil_ prefix) by
// both reporters, with the identities each side proved, the response code
// and flags; and both sidecars hand their golden metrics to their agents,
// which forward them to the server once per interval.
func TestSidecarMetricsInIstioNames(t *testing.T) {
	t.Parallel()
	p := startReportingPair(t, nil, "--label", "version=v1")
	webAgent, apiAgent, web, api := p.webAgent, p.apiAgent, p.web, p.api

	const allowed, denied = 20, 5
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: web.Outbound})}}
	send := func(method string, n, want int) {
		for range n {
			req, _ := http.NewRequest(method, "http://api/hello", strings.NewReader("x"))
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Fatalf("%s: %d, want %d", method, resp.StatusCode, want)
			}
		}
	}
	send("GET", allowed, 200)
	send("POST", denied, 403)

	source := map[string]string{"reporter": "source", "source_workload": "web", "source_workload_namespace": "default", "source_principal": webSA,
		"destination_workload": "api", "destination_principal": apiSA, "destination_service": "api.default.svc.cluster.local",
		"destination_service_name": "api", "destination_service_namespace": "default", "request_protocol": "http",
		"connection_security_policy": "unknown", "response_flags": "-"}
	dest := map[string]string{"reporter": "destination", "source_workload": "web", "source_principal": webSA, "destination_workload": "api",
		"destination_principal": apiSA, "destination_service_name": "api", "destination_version": "v1", "connection_security_policy": "mutual_tls"}
	with := func(base map[string]string, kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range base {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	for _, c := range []struct {
		admin, name string
		labels      map[string]string
		want        float64
	}{
		{web.Admin, "sigil_requests_total", with(source, "response_code", "200"), allowed},
		{web.Admin, "sigil_requests_total", with(source, "response_code", "403"), denied},
		{web.Admin, "sigil_request_duration_milliseconds_count", with(source, "response_code", "200"), allowed},
		{api.Admin, "sigil_requests_total", with(dest, "response_code", "200", "response_flags", "-"), allowed},
		{api.Admin, "sigil_requests_total", with(dest, "response_code", "403", "response_flags", "UAEX"), denied},
		{api.Admin, "sigil_request_duration_milliseconds_count", with(dest, "response_code", "200"), allowed},
	} {
		if got := sumSeries(t, c.admin, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}

	// Opaque TCP through a CONNECT tunnel: opened, closed and its bytes,
	// the request's received and the response's sent.
	conn, err := net.Dial("tcp", web.Outbound)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "CONNECT api:80 HTTP/1.1\r\nHost: api:80\r\n\r\n")
	br := bufio.NewReader(conn)
	if line, _ := br.ReadString('\n'); !strings.Contains(line, " 200 ") {
		t.Fatalf("CONNECT: %q", line)
	}
	for {
		if l, err := br.ReadString('\n'); err != nil || l == "\r\n" {
			break
		}
	}
	fmt.Fprintf(conn, "GET /tcp HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
	if b, _ := io.ReadAll(br); !strings.Contains(string(b), "200 OK") {
		t.Fatalf("through the tunnel: %q", b)
	}
	conn.Close()
	tcpDest := map[string]string{"reporter": "destination", "source_principal": webSA, "destination_principal": apiSA, "request_protocol": "tcp"}
	tcpSource := map[string]string{"reporter": "source", "source_principal": webSA, "destination_principal": apiSA, "destination_service_name": "api", "request_protocol": "tcp"}
	for _, c := range []struct {
		admin  string
		labels map[string]string
	}{{api.Admin, tcpDest}, {web.Admin, tcpSource}} {
		awaitSeries(t, c.admin, "sigil_tcp_connections_closed_total", c.labels, 1, 10*time.Second)
		if got := sumSeries(t, c.admin, "sigil_tcp_connections_opened_total", c.labels); got != 1 {
			t.Errorf("tcp opened %v = %v, want 1", c.labels, got)
		}
		if sumSeries(t, c.admin, "sigil_tcp_received_bytes_total", c.labels) == 0 || sumSeries(t, c.admin, "sigil_tcp_sent_bytes_total", c.labels) == 0 {
			t.Errorf("tcp bytes %v not counted", c.labels)
		}
	}

	// Golden metrics: each sidecar sends its interval's report on its
	// Discovery stream, and each agent forwards its node's to the server.
	// What the server keeps of them is checked where it is served (sigil
	// stat); here, that they flow: sent by the sidecars, and each agent
	// calling the server with them (sent, or dropped when the server does
	// not take them: never queued).
	for _, admin := range []string{web.Admin, api.Admin} {
		awaitSeries(t, admin, "sigil_stats_reports_total", map[string]string{"result": "sent"}, 1, 20*time.Second)
	}
	// Each agent forwarded every request its sidecar counted, once: web's
	// as source, api's as destination (sent, or dropped where the server
	// does not take them).
	for _, a := range []*harness.AgentProc{webAgent, apiAgent} {
		awaitSeries(t, a.Admin, "sigil_agent_stats_reports_total", nil, 1, 20*time.Second)
		if got := awaitSeries(t, a.Admin, "sigil_agent_stats_requests_total", nil, allowed+denied, 20*time.Second); got != allowed+denied {
			t.Errorf("agent forwarded %v requests, want %d", got, allowed+denied)
		}
		if got := sumSeries(t, a.Admin, "sigil_agent_stats_refused_total", nil); got != 0 {
			t.Errorf("agent refused %v of its own sidecar's series", got)
		}
	}
}

// TestCutResponsesCountAsFailures: a response cut off mid-body (the app
// closes its connection before the Content-Length it announced) is reset
// towards the caller, and both sidecars count it as a failed request
// (response_flags UR, Envoy's upstream reset, where the response had
// begun), not as a success and not left uncounted.
func TestCutResponsesCountAsFailures(t *testing.T) {
	t.Parallel()
	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	go http.Serve(app, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/cut" {
			io.WriteString(w, "whole\n")
			return
		}
		c, bw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		bw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly a part")
		bw.Flush()
		c.Close()
	}))
	m := harness.StartMesh(t)
	m.Entry("node1", webSA, "--selector", "unix:uid:"+myUID)
	m.Entry("node2", apiSA, "--selector", "unix:uid:"+myUID)
	webAgent, apiAgent := m.StartAgent("node1"), m.StartAgent("node2")
	dir := filepath.Join(m.Dir, "policy")
	os.MkdirAll(dir, 0o755)
	if err := os.WriteFile(filepath.Join(dir, "authz.rego"), []byte(webToAPIPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	_, webApp := harness.StartApp(t, "web")
	api := harness.StartProxy(t, apiAgent, "api", app.Addr().String(), dir)
	web := harness.StartProxy(t, webAgent, "web", webApp, dir, "--upstream", "api="+api.Inbound+"@"+apiSA)

	const cut = 3
	for range cut {
		// The caller sees a reset or a 503; what this test reads is what
		// the sidecars counted.
		if code, _, err := runCurl("-x", "http://"+web.Outbound, "http://api/cut"); code == 200 && err == nil {
			t.Errorf("a cut response reached the caller as a whole 200")
		}
	}
	if code, body := curl(t, "-x", "http://"+web.Outbound, "http://api/whole"); code != 200 {
		t.Fatalf("whole: %d %s", code, body)
	}
	// The callee's sidecar saw the app's response break off: UR. The
	// caller's saw its peer reset the exchange before any response
	// reached it (the callee's sidecar had not flushed the head): a 503
	// with UF, or UR where the head had gone out. A failure either way.
	reset := map[string]string{"reporter": "destination", "destination_service_name": "api", "response_flags": "UR"}
	if got := awaitSeries(t, api.Admin, "sigil_requests_total", reset, cut, 10*time.Second); got != cut {
		t.Errorf("destination: %v requests counted as reset, want %d", got, cut)
	}
	src := func(flags string) float64 {
		return sumSeries(t, web.Admin, "sigil_requests_total", map[string]string{"reporter": "source", "destination_service_name": "api", "response_flags": flags})
	}
	if got := src("UR") + src("UF"); got != cut {
		t.Errorf("source: %v requests counted as reset or failed, want %d", got, cut)
	}
	for _, c := range []struct{ admin, reporter string }{{api.Admin, "destination"}, {web.Admin, "source"}} {
		whole := map[string]string{"reporter": c.reporter, "destination_service_name": "api", "response_flags": "-", "response_code": "200"}
		if got := sumSeries(t, c.admin, "sigil_requests_total", whole); got != 1 {
			t.Errorf("%s: %v whole requests, want 1", c.reporter, got)
		}
	}
}
