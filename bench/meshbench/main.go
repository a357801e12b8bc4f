// Command meshbench is `make bench`'s comparison of Sigil with its peers:
// the same load, on the same machine, in the same run, through a pair of
// Sigil sidecars, an nginx mTLS pair, an HAProxy mTLS pair and a
// ghostunnel pair, all holding SVIDs issued by Sigil, against the backend
// called directly. It writes bench/results/<date>.json and the table in
// bench/README.md, and exits non-zero only if a scenario failed to run
// (a missed target is reported, not fatal).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

type report struct {
	Date     string         `json:"date"`
	Machine  map[string]any `json:"machine"`
	Command  string         `json:"command"`
	Results  []Result       `json:"results"`
	Policy   []policyResult `json:"policy"`
	Identity identityResult `json:"identity"`
	Memory   memoryResult   `json:"memory"`
	Targets  []target       `json:"targets"`
	Failures []string       `json:"failures,omitempty"`
	DataOnly bool           `json:"data_plane_only,omitempty"`
}

type target struct {
	What   string `json:"what"`
	Goal   string `json:"goal"`
	Actual string `json:"actual"`
	Met    bool   `json:"met"`
}

func main() {
	bin := flag.String("bin", "bin", "directory with Sigil's binaries")
	tools := flag.String("tools", ".tools", "directory with fortio and ghostunnel")
	outDir := flag.String("out", "bench/results", "where the JSON report goes")
	readme := flag.String("readme", "bench/README.md", "README whose table is replaced")
	duration := flag.Duration("duration", 30*time.Second, "measured time per fixed-rate run")
	short := flag.Duration("short", 10*time.Second, "measured time of the other runs")
	warmup := flag.Duration("warmup", 5*time.Second, "warm-up before each fixed-rate run")
	only := flag.String("setups", "sigil,nginx,haproxy,ghostunnel", "peers to measure against direct (comma-separated); fewer for a quick look")
	dataOnly := flag.Bool("data-plane-only", false, "skip the identity, policy and agent-memory scenarios")
	flag.Parse()
	log.SetFlags(log.Ltime)

	dir, err := os.MkdirTemp("", "meshbench-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	e := &env{dir: dir, bin: abs(*bin), tools: abs(*tools)}
	for _, name := range strings.Split(*only, ",") {
		switch name = strings.TrimSpace(name); name {
		case "sigil", "nginx", "haproxy", "ghostunnel":
			e.only = append(e.only, name)
		default:
			log.Fatalf("-setups: unknown setup %q (want sigil, nginx, haproxy, ghostunnel)", name)
		}
	}
	defer e.close()
	rep := &report{Date: time.Now().UTC().Format("2006-01-02"), Machine: machine(), Command: "make bench", DataOnly: *dataOnly}
	// A run with other scenarios or timings than make bench's says so.
	extra := ""
	flag.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "bin", "tools", "out", "readme":
		default:
			extra += fmt.Sprintf(" -%s=%s", f.Name, f.Value)
		}
	})
	if extra != "" {
		rep.Command = "go run ./bench/meshbench" + extra
	}
	fail := func(what string, err error) {
		log.Printf("FAILED %s: %v", what, err)
		rep.Failures = append(rep.Failures, what+": "+err.Error())
	}
	ctx := context.Background()
	if err := e.run(ctx, rep, *duration, *short, *warmup, fail); err != nil {
		fail("setup", err)
	}
	rep.Targets = targets(rep)
	if err := write(rep, *outDir, *readme); err != nil {
		fail("report", err)
	}
	printTable(rep)
	if len(rep.Failures) > 0 {
		log.Printf("%d scenario(s) failed to run", len(rep.Failures))
		e.close()
		os.RemoveAll(dir)
		os.Exit(1)
	}
}

func abs(p string) string {
	if strings.HasPrefix(p, "/") {
		return p
	}
	wd, _ := os.Getwd()
	return wd + "/" + p
}

func machine() map[string]any {
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return map[string]any{"cpus": runtime.NumCPU(), "cpu": model, "go": runtime.Version(), "os": runtime.GOOS + "/" + runtime.GOARCH}
}

func (e *env) run(ctx context.Context, rep *report, dur, short, warm time.Duration, fail func(string, error)) error {
	backend := freePort()
	fortioSrv, err := e.start("fortio-server", e.tools+"/fortio", "server", "-http-port", backend, "-grpc-port", "disabled", "-redirect-port", "disabled", "-loglevel", "Error")
	if err != nil {
		return err
	}
	_ = fortioSrv
	if err := waitPort(ctx, backend); err != nil {
		return err
	}
	e.backend = backend
	grpcApp, err := e.start("grpc-app", e.bin+"/sigil-demo-app", "--grpc", "--listen", "127.0.0.1:0", "--name", "grpc")
	if err != nil {
		return err
	}
	line, err := grpcApp.waitLog("listening on", 30*time.Second)
	if err != nil {
		return err
	}
	e.grpcBackend = strings.Fields(line[strings.Index(line, "listening on"):])[2]
	if err := e.startMesh(ctx); err != nil {
		return err
	}
	log.Printf("mesh up; SVID %s", e.id)

	// Memory of an idle sidecar, before any load.
	idle, err := e.sigilPair(ctx, "idle", e.backend)
	if err != nil {
		return err
	}
	time.Sleep(2 * time.Second) // let start-up garbage be collected: idle means idle
	rep.Memory.IdleProxyMB = rssMB(idle.server.pid())
	rep.Memory.IdleAnonMB = statusMB(idle.server.pid(), "RssAnon:")
	rep.Memory.IdleFileMB = statusMB(idle.server.pid(), "RssFile:")
	idle.stopPair()

	direct := &setup{name: "direct", target: e.backend}
	builders := []struct {
		name string
		make func(context.Context) (*setup, error)
	}{
		{"sigil", func(ctx context.Context) (*setup, error) { return e.sigilPair(ctx, "api", e.backend) }},
		{"nginx", e.nginxPair},
		{"haproxy", e.haproxyPair},
		{"ghostunnel", e.ghostunnelPair},
	}
	setups := []*setup{direct}
	for _, b := range builders {
		if !slices.Contains(e.only, b.name) {
			continue
		}
		s, err := b.make(ctx)
		if err != nil {
			fail("start "+b.name, err)
			continue
		}
		setups = append(setups, s)
	}

	// 1. Fixed rates, keep-alive, 1 KiB responses, 16 connections.
	for _, qps := range []int{1000, 4000} {
		var base Result
		for _, s := range setups {
			scenario := fmt.Sprintf("http1-keepalive-%drps", qps)
			rate := []string{"-qps", fmt.Sprint(qps), "-c", "16"}
			if _, err := e.fortio(s, append(rate, "-t", warm.String())...); err != nil {
				fail(scenario+"/"+s.name+" warm-up", err)
				continue
			}
			r, err := e.fortio(s, append(rate, "-t", dur.String())...)
			if err != nil {
				fail(scenario+"/"+s.name, err)
				continue
			}
			r.Scenario = scenario
			if s.name == "direct" {
				base = r
			} else {
				r.AddedP50ms, r.AddedP90ms, r.AddedP99ms = r.P50ms-base.P50ms, r.P90ms-base.P90ms, r.P99ms-base.P99ms
			}
			log.Printf("%s %-10s qps %.0f p50 %.2fms p90 %.2fms p99 %.2fms cpu %.3f/%.3f rss %.1f/%.1f errors %d", scenario, s.name, r.QPS, r.P50ms, r.P90ms, r.P99ms, r.CPUClientPer1k, r.CPUServerPer1k, r.RSSClientMB, r.RSSServerMB, r.Errors)
			rep.Results = append(rep.Results, r)
		}
	}

	// 2. Saturation, 64 connections.
	var baseQPS float64
	for _, s := range setups {
		r, err := e.fortio(s, "-qps", "0", "-c", "64", "-t", short.String())
		if err != nil {
			fail("saturation/"+s.name, err)
			continue
		}
		r.Scenario = "saturation-64conn"
		if s.name == "direct" {
			baseQPS = r.QPS
		} else if baseQPS > 0 {
			r.RatioQPS = r.QPS / baseQPS
		}
		log.Printf("saturation %-10s qps %.0f (%.2f of direct)", s.name, r.QPS, r.RatioQPS)
		rep.Results = append(rep.Results, r)
	}

	// 4. New connections: every request a new mTLS handshake with the
	// callee's side of each pair.
	for _, s := range setups[1:] {
		tlsTarget := s.serverAddr(e)
		if tlsTarget == "" {
			continue
		}
		ts := &setup{name: "tls:", target: "https://" + tlsTarget + "/echo?size=1024", server: s.server}
		r, err := e.fortio(ts, "-qps", "0", "-c", "16", "-t", short.String(), "-keepalive=false", "-k", "-cert", e.certFile, "-key", e.keyFile)
		if err != nil {
			fail("new-connections/"+s.name, err)
			continue
		}
		r.Scenario, r.Setup = "mtls-new-connection", s.name
		log.Printf("new mTLS connections %-10s %.0f/s p99 %.2fms", s.name, r.QPS, r.P99ms)
		rep.Results = append(rep.Results, r)
	}
	for _, s := range setups[1:] {
		s.stopPair()
	}

	// 3. gRPC unary, mesh vs direct.
	if !slices.Contains(e.only, "sigil") {
		return nil
	}
	if d, err := grpcLoad(ctx, e.grpcBackend, "", 16, short); err != nil {
		fail("grpc/direct", err)
	} else {
		d.Scenario, d.Setup = "grpc-unary", "direct"
		rep.Results = append(rep.Results, d)
		gp, err := e.sigilPair(ctx, "grpc", e.grpcBackend)
		if err != nil {
			fail("grpc/sigil start", err)
		} else if m, err := grpcLoad(ctx, gp.target, "grpc", 16, short); err != nil {
			fail("grpc/sigil", err)
		} else {
			m.Scenario, m.Setup = "grpc-unary", "sigil"
			m.RatioQPS, m.AddedP50ms, m.AddedP99ms = m.QPS/d.QPS, m.P50ms-d.P50ms, m.P99ms-d.P99ms
			rep.Results = append(rep.Results, m)
			log.Printf("grpc direct %.0f/s, sigil %.0f/s (%.2f), p99 %.2f vs %.2f ms", d.QPS, m.QPS, m.RatioQPS, d.P99ms, m.P99ms)
			gp.stopPair()
		}
	}

	// 6. Identity, 7. policy, 8. memory of the agent.
	if rep.DataOnly {
		return nil
	}
	if err := e.identity(ctx, rep); err != nil {
		fail("identity", err)
	}
	rep.Policy = policyBench()
	if err := e.agentMemory(ctx, rep); err != nil {
		fail("agent memory", err)
	}
	return nil
}

// serverAddr is the callee side's mTLS address of a pair.
func (s *setup) serverAddr(e *env) string {
	if s.server == nil {
		return ""
	}
	switch s.name {
	case "sigil":
		if line, err := s.server.waitLog(`"sigil-proxy running"`, time.Second); err == nil {
			return proxyRunning.FindStringSubmatch(line)[1]
		}
	case "nginx":
		b, _ := os.ReadFile(e.dir + "/nginx/b.conf")
		return fieldAfter(string(b), "listen ", " ssl")
	case "haproxy":
		b, _ := os.ReadFile(e.dir + "/haproxy/b.cfg")
		return fieldAfter(string(b), "bind ", " ssl")
	case "ghostunnel":
		for i, a := range s.server.cmd.Args {
			if a == "--listen" {
				return s.server.cmd.Args[i+1]
			}
		}
	}
	return ""
}

func fieldAfter(s, start, end string) string {
	i := strings.Index(s, start)
	if i < 0 {
		return ""
	}
	rest := s[i+len(start):]
	j := strings.Index(rest, end)
	if j < 0 {
		return ""
	}
	return rest[:j]
}

func write(rep *report, outDir, readme string) error {
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(outDir+"/"+rep.Date+".json", b, 0o644); err != nil {
		return err
	}
	old, err := os.ReadFile(readme)
	if err != nil {
		return err
	}
	const start, end = "<!-- meshbench:start -->", "<!-- meshbench:end -->"
	s := string(old)
	i, j := strings.Index(s, start), strings.Index(s, end)
	if i < 0 || j < i {
		return errors.New(readme + ": no meshbench markers")
	}
	return os.WriteFile(readme, []byte(s[:i+len(start)]+"\n"+markdown(rep)+s[j:]), 0o644)
}
