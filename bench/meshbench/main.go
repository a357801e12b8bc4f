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
	Machine  map[string]any `json:"machine"` // cpus, cpu, go, os, ktls (ktlsProbe's verdict)
	Command  string         `json:"command"`
	Results  []Result       `json:"results"`
	Policy   []policyResult `json:"policy"`
	Identity identityResult `json:"identity"`
	Memory   memoryResult   `json:"memory"`
	Targets  []target       `json:"targets"`
	Failures []string       `json:"failures,omitempty"`
	DataOnly bool           `json:"data_plane_only,omitempty"`
	Scaling  bool           `json:"scaling_only,omitempty"`
	GRPCOnly bool           `json:"grpc_only,omitempty"`
}

// timings are the durations of the runs, from the flags.
type timings struct {
	dur, short, warm    time.Duration // fixed-rate runs, other runs, warm-up before fixed-rate runs
	scale, scaleWarm    time.Duration // each point of the scaling curve, and its warm-up
	grpc                time.Duration // each gRPC row
	census              time.Duration // each pair's syscall census (0: none)
	dataOnly, scaleOnly bool
	grpcOnly            bool
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
	only := flag.String("setups", "sigil,sigil-loop,floor,floor-loop,nginx,haproxy,ghostunnel", "peers to measure against direct (comma-separated); fewer for a quick look; floor is bench/floor, the sidecar's transport without its features; floor-loop is the same on proxy/loop's epoll loop (bench/floor -path loop); sigil-h2 adds a Sigil pair with h2UpgradePolicy UPGRADE (HTTP/1.1 between the sidecars over HTTP/2); sigil-loop a Sigil pair whose sidecars both run --inbound-event-loop and --outbound-event-loop")
	dataOnly := flag.Bool("data-plane-only", false, "skip the identity, policy and agent-memory scenarios")
	scaleOnly := flag.Bool("scaling-only", false, "run only the scaling curve (Sigil, nginx and, when -setups names it, sigil-h2 against direct; -setups still filters)")
	scaleDur := flag.Duration("scaling-duration", 4*time.Second, "measured time of each point of the scaling curve, per setup")
	scaleWarm := flag.Duration("scaling-warmup", time.Second, "warm-up before each point of the scaling curve, per setup")
	censusDur := flag.Duration("census-duration", 5*time.Second, "measured time of each pair's syscall census (strace -c on both proxies at 1000 rps; 0: no census)")
	grpcOnly := flag.Bool("grpc-only", false, "run only the gRPC rows (unary and streaming: Sigil and nginx against direct; -setups still filters)")
	grpcDur := flag.Duration("grpc-duration", 8*time.Second, "measured time of each gRPC row (unary and streaming, per setup)")
	probe := flag.Bool("ktls-probe", false, "only report whether this kernel offers kernel TLS (TCP_ULP \"tls\"), then exit")
	if addr := os.Getenv(grpcBackendEnv); addr != "" {
		// meshbench started as its own gRPC backend (startGRPCBackend).
		if err := serveGRPCBackend(addr); err != nil {
			log.Fatal(err)
		}
		return
	}
	flag.Parse()
	log.SetFlags(log.Ltime)
	if *probe {
		fmt.Println("kernel TLS:", ktlsProbe())
		return
	}

	dir, err := os.MkdirTemp("", "meshbench-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	e := &env{dir: dir, bin: abs(*bin), tools: abs(*tools)}
	for _, name := range strings.Split(*only, ",") {
		switch name = strings.TrimSpace(name); name {
		case "sigil", "sigil-h2", "sigil-loop", "floor", "floor-loop", "nginx", "haproxy", "ghostunnel":
			e.only = append(e.only, name)
		default:
			log.Fatalf("-setups: unknown setup %q (want sigil, sigil-h2, sigil-loop, floor, floor-loop, nginx, haproxy, ghostunnel)", name)
		}
	}
	defer e.close()
	rep := &report{Date: time.Now().UTC().Format("2006-01-02"), Machine: machine(), Command: "make bench", DataOnly: *dataOnly, Scaling: *scaleOnly, GRPCOnly: *grpcOnly}
	log.Printf("kernel TLS: %s", rep.Machine["ktls"])
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
	t := timings{dur: *duration, short: *short, warm: *warmup, scale: *scaleDur, scaleWarm: *scaleWarm, grpc: *grpcDur, census: *censusDur, dataOnly: *dataOnly, scaleOnly: *scaleOnly, grpcOnly: *grpcOnly}
	if err := e.run(ctx, rep, t, fail); err != nil {
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
	return map[string]any{"cpus": runtime.NumCPU(), "cpu": model, "go": runtime.Version(), "os": runtime.GOOS + "/" + runtime.GOARCH, "ktls": ktlsProbe()}
}

func (e *env) run(ctx context.Context, rep *report, t timings, fail func(string, error)) error {
	backend := freePort()
	if _, err := e.start("fortio-server", e.tools+"/fortio", "server", "-http-port", backend, "-grpc-port", "disabled", "-redirect-port", "disabled", "-loglevel", "Error",
		"-maxpayloadsizekb", "1024"); err != nil { // the scaling curve's 1 MiB responses
		return err
	}
	if err := waitPort(ctx, backend); err != nil {
		return err
	}
	e.backend = backend
	if err := e.startGRPCBackend(); err != nil {
		return err
	}
	if err := e.startMesh(ctx); err != nil {
		return err
	}
	log.Printf("mesh up; SVID %s", e.id)
	if t.grpcOnly {
		e.grpcRows(ctx, rep, t.grpc, fail)
		return nil
	}

	if !t.scaleOnly {
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
	}

	direct := &setup{name: "direct", target: e.backend}
	builders := []struct {
		name string
		make func(context.Context) (*setup, error)
	}{
		{"sigil", func(ctx context.Context) (*setup, error) { return e.sigilPair(ctx, "api", e.backend) }},
		{"sigil-h2", e.sigilH2Pair},
		{"sigil-loop", func(ctx context.Context) (*setup, error) {
			s, err := e.sigilPair(ctx, "apiloop", e.backend, "--inbound-event-loop", "--outbound-event-loop")
			if s != nil {
				s.name = "sigil-loop"
			}
			return s, err
		}},
		{"floor", func(ctx context.Context) (*setup, error) { return e.floorPair(ctx, "floor") }},
		{"floor-loop", func(ctx context.Context) (*setup, error) { return e.floorPair(ctx, "floor-loop", "-path", "loop") }},
		{"nginx", e.nginxPair},
		{"haproxy", e.haproxyPair},
		{"ghostunnel", e.ghostunnelPair},
	}
	setups := []*setup{direct}
	for _, b := range builders {
		if !slices.Contains(e.only, b.name) || t.scaleOnly && b.name != "sigil" && b.name != "sigil-h2" && b.name != "nginx" {
			continue
		}
		s, err := b.make(ctx)
		if err != nil {
			fail("start "+b.name, err)
			continue
		}
		setups = append(setups, s)
	}
	if t.scaleOnly {
		rep.Results = append(rep.Results, e.scaling(setups, t.scale, t.scaleWarm, fail)...)
		for _, s := range setups[1:] {
			s.stopPair()
		}
		return nil
	}

	// 1. Fixed rates, keep-alive, 1 KiB responses, 16 connections.
	for _, qps := range []int{1000, 4000} {
		var base Result
		for _, s := range setups {
			scenario := fmt.Sprintf("http1-keepalive-%drps", qps)
			rate := []string{"-qps", fmt.Sprint(qps), "-c", "16"}
			if t.warm > 0 { // fortio's -t 0 runs until interrupted
				if _, err := e.fortio(s, append(rate, "-t", t.warm.String())...); err != nil {
					fail(scenario+"/"+s.name+" warm-up", err)
					continue
				}
			}
			r, err := e.fortio(s, append(rate, "-t", t.dur.String())...)
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
			log.Printf("%s %-10s qps %.0f p50 %.2fms p90 %.2fms p99 %.2fms cpu %.3f/%.3f rss %.1f/%.1f syscalls/req r/w %.2f/%.2f %.2f/%.2f errors %d", scenario, s.name, r.QPS, r.P50ms, r.P90ms, r.P99ms, r.CPUClientPer1k, r.CPUServerPer1k, r.RSSClientMB, r.RSSServerMB, r.ReadsClient, r.WritesClient, r.ReadsServer, r.WritesServer, r.Errors)
			rep.Results = append(rep.Results, r)
		}
	}

	// 2. Saturation, 64 connections.
	var baseQPS float64
	for _, s := range setups {
		r, err := e.fortio(s, "-qps", "0", "-c", "64", "-t", t.short.String())
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
		log.Printf("saturation %-10s qps %.0f (%.2f of direct) syscalls/req r/w client %.2f/%.2f server %.2f/%.2f", s.name, r.QPS, r.RatioQPS, r.ReadsClient, r.WritesClient, r.ReadsServer, r.WritesServer)
		rep.Results = append(rep.Results, r)
	}

	// 2b. Every system call of each proxy, by kind.
	if t.census > 0 {
		rep.Results = append(rep.Results, e.census(setups[1:], t.census, fail)...)
	}

	// 4. New connections: every request a new mTLS handshake with the
	// callee's side of each pair.
	for _, s := range setups[1:] {
		tlsTarget := s.serverAddr(e)
		if tlsTarget == "" {
			continue
		}
		ts := &setup{name: "tls:", target: "https://" + tlsTarget + "/echo?size=1024", server: s.server}
		r, err := e.fortio(ts, "-qps", "0", "-c", "16", "-t", t.short.String(), "-keepalive=false", "-k", "-cert", e.certFile, "-key", e.keyFile)
		if err != nil {
			fail("new-connections/"+s.name, err)
			continue
		}
		r.Scenario, r.Setup = "mtls-new-connection", s.name
		log.Printf("new mTLS connections %-10s %.0f/s p99 %.2fms", s.name, r.QPS, r.P99ms)
		rep.Results = append(rep.Results, r)
	}

	// 5. The scaling curve: Sigil and nginx against direct.
	var curve []*setup
	for _, s := range setups {
		if s.name == "direct" || s.name == "sigil" || s.name == "nginx" {
			curve = append(curve, s)
		}
	}
	rep.Results = append(rep.Results, e.scaling(curve, t.scale, t.scaleWarm, fail)...)
	for _, s := range setups[1:] {
		s.stopPair()
	}

	// 3. gRPC, unary and streaming, through Sigil and nginx and direct.
	e.grpcRows(ctx, rep, t.grpc, fail)

	// 6. Identity, 7. policy, 8. memory of the agent.
	if t.dataOnly {
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

// grpcRows measures gRPC unary (health Check, 16 goroutines) and
// streaming (meshbench.Echo/Stream) directly and through each gRPC pair
// chosen by -setups (Sigil, nginx grpc_pass), for d each.
func (e *env) grpcRows(ctx context.Context, rep *report, d time.Duration, fail func(string, error)) {
	setups := []*setup{{name: "direct", target: e.grpcBackend}}
	if slices.Contains(e.only, "sigil") {
		if s, err := e.sigilPair(ctx, "grpc", e.grpcBackend); err != nil {
			fail("grpc/sigil start", err)
		} else {
			setups = append(setups, s)
		}
	}
	if slices.Contains(e.only, "nginx") {
		if s, err := e.nginxGRPCPair(ctx); err != nil {
			fail("grpc/nginx start", err)
		} else {
			setups = append(setups, s)
		}
	}
	if len(setups) == 1 {
		return
	}
	rows := []struct {
		scenario string
		load     func(*setup) (Result, error)
	}{
		{"grpc-unary", func(s *setup) (Result, error) { return grpcLoad(ctx, s, 16, d) }},
		{"grpc-stream", func(s *setup) (Result, error) { return grpcStreamLoad(ctx, s, d) }},
	}
	for _, row := range rows {
		var base Result
		for _, s := range setups {
			r, err := row.load(s)
			if err != nil {
				fail(row.scenario+"/"+s.name, err)
				continue
			}
			r.Scenario = row.scenario
			if s.name == "direct" {
				base = r
			} else if base.QPS > 0 {
				r.RatioQPS, r.AddedP50ms, r.AddedP99ms = r.QPS/base.QPS, r.P50ms-base.P50ms, r.P99ms-base.P99ms
			}
			log.Printf("%s %-7s %.0f/s (%.2f of direct) p50 %.2f p99 %.2f ms, syscalls/req r/w client %.2f/%.2f server %.2f/%.2f, errors %d", row.scenario, s.name, r.QPS, r.RatioQPS, r.P50ms, r.P99ms, r.ReadsClient, r.WritesClient, r.ReadsServer, r.WritesServer, r.Errors)
			rep.Results = append(rep.Results, r)
		}
	}
	for _, s := range setups[1:] {
		s.stopPair()
	}
}

// serverAddr is the callee side's mTLS address of a pair.
func (s *setup) serverAddr(e *env) string {
	if s.server == nil {
		return ""
	}
	switch s.name {
	case "sigil", "sigil-h2":
		if line, err := s.server.waitLog(`"sigil-proxy running"`, time.Second); err == nil {
			return proxyRunning.FindStringSubmatch(line)[1]
		}
	case "nginx":
		b, _ := os.ReadFile(e.dir + "/nginx/b.conf")
		return fieldAfter(string(b), "listen ", " ssl")
	case "haproxy":
		b, _ := os.ReadFile(e.dir + "/haproxy/b.cfg")
		return fieldAfter(string(b), "bind ", " ssl")
	case "ghostunnel", "floor", "floor-loop":
		for i, a := range s.server.cmd.Args {
			if a == "--listen" || a == "-listen" {
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
	if err := os.WriteFile(outDir+"/"+resultsName(rep), b, 0o644); err != nil {
		return err
	}
	if rep.Scaling || rep.GRPCOnly {
		log.Printf("partial run: %s written; %s left as it was", outDir+"/"+resultsName(rep), readme)
		return nil
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
