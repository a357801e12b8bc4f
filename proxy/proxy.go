// Package proxy is sigil-proxy, the sidecar. It takes the workload's
// identity from the agent's Workload API and carries the workload's traffic:
// inbound, mTLS (TLS 1.3, client certificate required and verified) with an
// OPA decision on every request or TCP connection before the app sees it;
// outbound, to other services' sidecars over mTLS, checking that each peer
// is an identity the destination service may have (secure naming).
//
// Its files follow a request: listener.go (listen), then inbound.go or
// outbound.go and forward.go (ServeHTTP), route.go (the route's steps in
// order), forward.go's send, and package upstream (where requests go);
// what both sides share is in package hop. docs/proxy-walk.md follows one
// request through them.
package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sigil-mesh/sigil/listener"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/policy"
	"github.com/sigil-mesh/sigil/proxy/h1"
	"github.com/sigil-mesh/sigil/telemetry"
)

// Proxy is a running sidecar.
type Proxy struct {
	cfg    *checked
	log    *slog.Logger
	id     *identity
	policy *policy.Engine
	// shownID and shownPolicy publish id and policy to the admin endpoint
	// and the expiry gauge, which come up before either exists (Run
	// writes the plain fields once, before any listener that reads them).
	shownID     atomic.Pointer[identity]
	shownPolicy atomic.Pointer[policy.Engine]
	// shownOut publishes the outbound side's endpoints to /config.
	shownOut atomic.Pointer[outbound]
	// dryRun is the engine of the dryrun Policy resource (policyres.go):
	// decided beside policy, never blocking; shownDryRun publishes it.
	dryRun      *policy.Engine
	shownDryRun atomic.Pointer[policy.Engine]
	policyRes   policyResources
	metrics     *metrics
	access      *jsonLines
	trace       *tracing // nil: no tracing
	names       naming.Resolver
	ready       atomic.Bool
	drain       atomic.Bool
	// notReady holds the reasons, beyond start-up and drain, that /ready
	// fails (a listener that stopped, say).
	notReady notReady
	limits   connLimits
	bodyRate *bodyRate
	// refused counts connections a listener closed at accept, by listener
	// and reason.
	refused *prometheus.CounterVec
	// h2Limits bound what one HTTP/2 client connection may send;
	// h2Closed counts the connections closed for going past them.
	h2Limits h2Limits
	h2Closed *prometheus.CounterVec
	// taps are the `sigil tap` sessions running on this sidecar (tap.go).
	taps *tapper
	// recorder appends decisions to the audit spool, shipper sends them
	// to the agent (audit.go).
	recorder *auditRecorder
	shipper  *agentShipper
}

// Run runs the proxy until ctx is done, then drains in-flight requests.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	c, err := cfg.Validate()
	if err != nil {
		return err
	}
	p := &Proxy{cfg: c, log: log, taps: newTapper(time.Now, log), shipper: &agentShipper{}}
	p.metrics = newMetrics(func() float64 {
		if id := p.shownID.Load(); id != nil {
			return id.expiresIn()
		}
		return 0
	}, telemetry.NewRecorder(time.Now()))
	p.metrics.version = c.labels["version"]
	if err := p.setLimits(); err != nil {
		return err
	}

	// The admin endpoint comes up first, so /ready can say what is missing.
	adminLn, err := net.Listen("tcp", c.Admin)
	if err != nil {
		return fmt.Errorf("proxy: --admin %s: %w", c.Admin, err)
	}
	adminSrv := &http.Server{Handler: p.adminHandler(), ReadHeaderTimeout: 5 * time.Second}
	go p.serveListener("admin", func() error {
		if err := adminSrv.Serve(listener.Retrying(adminLn, "admin", log)); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	defer adminSrv.Close()

	var closers []func() error
	defer func() {
		for _, f := range closers {
			f()
		}
	}()
	if p.access, err = openJSONLines(c.AccessLog); err != nil {
		return fmt.Errorf("proxy: --access-log: %w", err)
	}
	closers = append(closers, p.access.Close)
	decisions, err := openJSONLines(c.DecisionLog)
	if err != nil {
		return fmt.Errorf("proxy: --decision-log: %w", err)
	}
	opts := []policy.Option{policy.WithReloadHook(p.countReload)}
	labels := map[string]string{"service": c.Service, "type": "sigil-proxy"}
	if decisions.w != nil {
		// The engine owns the decision log from here: it flushes and closes
		// it. It holds no more than the export does (masked).
		opts = append(opts, policy.WithDecisionLog(c.audit.mask.Writer(decisions), labels))
	}
	if c.audit.on {
		p.recorder = newAuditRecorder(c.audit.mask, labels)
		p.metrics.reg.MustRegister(p.recorder.notRecorded, p.recorder.pausedGauge())
		opts = append(opts, policy.WithRecorder(p.recorder, !c.AuditFailureModeAllow))
	}
	p.policy, err = policy.New(ctx, c.Policy, log, opts...)
	p.shownPolicy.Store(p.policy)
	closers = append(closers, p.policy.Close)
	switch {
	case err != nil:
		// Not fatal: the proxy denies everything and is not ready until a
		// good policy appears at the path.
		log.Error("policy not loaded; denying every request until it is", "error", err)
	case c.Policy == "":
		log.Info("no --policy: the enforced policy comes from Policy resources; denying every request until one arrives")
	}
	dryOpts := []policy.Option{policy.WithMode(policy.ModeDryRun)}
	if decisions.w != nil {
		dryOpts = append(dryOpts, policy.WithDecisionLogOf(p.policy))
	}
	if p.recorder != nil {
		// Dry-run decisions are exported too (sigil.mode "dryrun"); they
		// never block, recorded or not.
		dryOpts = append(dryOpts, policy.WithRecorder(p.recorder, false))
	}
	p.dryRun, _ = policy.New(ctx, "", log, dryOpts...) // no path: nothing to load yet
	p.shownDryRun.Store(p.dryRun)
	p.metrics.reg.MustRegister(policyCacheMetrics(p.policy)...)

	log.Info("waiting for an SVID from the agent", "socket", c.Socket)
	p.id, err = newIdentity(ctx, c.Socket)
	if err != nil {
		return err
	}
	p.shownID.Store(p.id)
	closers = append([]func() error{func() error { p.id.close(); return nil }}, closers...)
	if c.otlpURL != "" {
		if p.trace, err = newTracing(c, p.id.id.String()); err != nil {
			return err
		}
		// Runs before the other closers: the last spans go out first.
		closers = append([]func() error{func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return p.trace.shutdown(ctx)
		}}, closers...)
	}
	log.Info("svid received", "spiffe_id", p.id.id.String(), "expires_in", time.Duration(p.id.expiresIn()*float64(time.Second)).Round(time.Second).String())
	if p.names, err = meshNames(p.id.id, c.Namespace, c.ClusterDomain); err != nil {
		return err
	}
	p.metrics.fqdn = p.names.FQDN

	inLn, err := net.Listen("tcp", c.Inbound)
	if err != nil {
		return fmt.Errorf("proxy: --inbound %s: %w", c.Inbound, err)
	}
	outLn, err := net.Listen("tcp", c.Outbound)
	if err != nil {
		inLn.Close()
		return fmt.Errorf("proxy: --outbound %s: %w", c.Outbound, err)
	}
	advertise, err := advertiseAddr(c, inLn.Addr())
	if err != nil {
		inLn.Close()
		outLn.Close()
		return err
	}
	in, err := newInbound(p)
	if err != nil {
		inLn.Close()
		outLn.Close()
		return err
	}
	out := newOutbound(p)
	if c.OutboundEventLoop {
		if err := out.startLoop(); err != nil {
			inLn.Close()
			outLn.Close()
			return fmt.Errorf("proxy: --outbound-event-loop: %w", err)
		}
	}
	p.shownOut.Store(out)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Discovery has its own context: cancelling it first on shutdown
	// deregisters the endpoint before the listeners close.
	discoverCtx, stopDiscovery := context.WithCancel(ctx)
	defer stopDiscovery()
	var wg sync.WaitGroup
	if c.audit.on {
		closeSpool, err := p.startAudit(runCtx, &wg)
		if err != nil {
			return err
		}
		defer closeSpool()
	}
	wg.Add(4)
	go func() { defer wg.Done(); p.discover(discoverCtx, out, advertise) }()
	inLimited := newLimitedListener(inLn, "inbound", p.limits.inbound, p.metrics.reg, p.refused, log)
	outLimited := newLimitedListener(outLn, "outbound", p.limits.outbound, p.metrics.reg, p.refused, log)
	p.guardOutbound(outLimited)
	go func() {
		defer wg.Done()
		p.serveListener("inbound", func() error { return in.serve(idleListener{inLimited, c.IdleTimeout}) })
	}()
	go func() {
		defer wg.Done()
		p.serveListener("outbound", func() error { return out.serve(idleListener{outLimited, c.IdleTimeout}) })
	}()
	go func() { defer wg.Done(); p.policy.Watch(runCtx, time.Second) }()
	go p.flushLoop(runCtx)

	p.ready.Store(true)
	// Start-up is over: give back what only it needed, now, after the
	// first configuration (1 s) and after the first requests (30 s), and
	// whenever the sidecar goes quiet after a burst (trim.go).
	go releaseMemory(runCtx, log)
	log.Info("sigil-proxy running", "service", c.Service, "spiffe_id", p.id.id.String(),
		"inbound", inLn.Addr().String(), "outbound", outLn.Addr().String(), "admin", adminLn.Addr().String(),
		"advertise", advertise, "app", c.App, "transparent", c.Transparent, "upstreams", c.upstreamNames(),
		"inbound_max_connections", p.limits.inbound, "outbound_max_connections", p.limits.outbound, "inbound_max_handshakes", p.limits.handshakes)

	<-ctx.Done()
	// Drain: leave the endpoint pool, stop taking connections, let
	// in-flight requests finish.
	p.drain.Store(true)
	stopDiscovery()
	log.Info("draining", "grace", c.DrainGrace.String())
	// Keep serving while the other sidecars learn that this endpoint left.
	time.Sleep(c.DrainGrace)
	inLn.Close()
	outLn.Close()
	shutdownCtx, stop := context.WithTimeout(context.Background(), 15*time.Second)
	defer stop()
	// The event loops first: a connection one hands back to the
	// goroutine path while it drains is then still drained by that
	// path's server.
	var errs error
	if in.loop != nil {
		errs = errors.Join(errs, in.loop.Shutdown(shutdownCtx))
	}
	if out.loop != nil {
		errs = errors.Join(errs, out.loop.Shutdown(shutdownCtx))
	}
	errs = errors.Join(errs, in.h2.Shutdown(shutdownCtx), out.h2.Shutdown(shutdownCtx), in.fast.Shutdown(shutdownCtx), out.fast.Shutdown(shutdownCtx))
	cancel()
	wg.Wait()
	p.access.Flush()
	p.policy.Flush()
	log.Info("sigil-proxy stopped")
	if errs != nil {
		log.Warn("some requests did not finish before the drain timeout", "error", errs)
	}
	return nil
}

func (p *Proxy) countDecision(d policy.Decision) {
	switch {
	case d.Err != nil:
		p.metrics.decisions.WithLabelValues("error").Inc()
		p.log.Warn("policy evaluation failed; denied", "decision_id", d.ID, "error", d.Err)
	case d.Allow:
		p.metrics.decisions.WithLabelValues("allow").Inc()
	default:
		p.metrics.decisions.WithLabelValues("deny").Inc()
	}
}

// accessRecord is one access log line.
type accessRecord struct {
	Time        time.Time `json:"time"`
	Direction   string    `json:"direction"`
	Source      string    `json:"source"`
	Destination string    `json:"destination_service"`
	Method      string    `json:"method"`
	Host        string    `json:"host"`
	Path        string    `json:"path"`
	Protocol    string    `json:"protocol"`
	Status      int       `json:"status"`
	DurationMS  float64   `json:"duration_ms"`
	DecisionID  string    `json:"decision_id,omitempty"`
	TraceParent string    `json:"traceparent,omitempty"`
}

// observe counts a finished request (metrics, golden metrics) and writes
// its access log line.
func (p *Proxy) observe(rec requestRecord, r *http.Request, start time.Time, decisionID string) {
	d := time.Since(start)
	p.metrics.request(&rec, d)
	p.taps.record(p, &rec, r, start, d)
	if p.access.w == nil {
		return
	}
	direction, service := "outbound", rec.host
	if rec.reporter == reporterDestination {
		direction = "inbound"
	}
	if !rec.service.IsZero() {
		service = rec.service.Name
	}
	p.access.write(accessRecord{
		Time: start.UTC(), Direction: direction, Source: rec.source, Destination: service,
		Method: r.Method, Host: r.Host, Path: r.URL.Path, Protocol: rec.protocol, Status: rec.code,
		DurationMS: float64(d.Microseconds()) / 1000, DecisionID: decisionID, TraceParent: r.Header.Get("Traceparent"),
	})
}

// countReload counts one policy load attempt, the first included.
func (p *Proxy) countReload(ok bool) {
	if ok {
		p.metrics.reloads.WithLabelValues("ok").Inc()
	} else {
		p.metrics.reloads.WithLabelValues("refused").Inc()
	}
}

// flushLoop writes out the access and decision logs every second.
func (p *Proxy) flushLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.access.Flush()
			p.policy.Flush()
		}
	}
}

// The HTTP/1.1 servers' client timeouts (net/http's names): a request
// head begun must be whole within leanHeaderTimeout, and a kept-alive
// connection must bring its next request within leanIdleTimeout. The
// inbound's event loop has the same.
const (
	leanHeaderTimeout = 10 * time.Second
	leanIdleTimeout   = 2 * time.Minute
)

// leanServer is the HTTP/1.1 server of one side, with the limits of its
// net/http twin; handler panics it logs at error level.
func (p *Proxy) leanServer(h http.Handler, part string) *h1.Server {
	return &h1.Server{Handler: p.bodyRate.handler(h), ReadHeaderTimeout: leanHeaderTimeout, IdleTimeout: leanIdleTimeout, MaxHeaderBytes: 64 << 10,
		ErrorLog: slog.NewLogLogger(p.log.With("part", part).Handler(), slog.LevelError)}
}

// httpErrorLog sends net/http's own complaints to slog at debug level.
func (p *Proxy) httpErrorLog(part string) *log.Logger {
	return slog.NewLogLogger(p.log.With("part", part).Handler(), slog.LevelDebug)
}

func (p *Proxy) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(p.metrics.reg, promhttp.HandlerOpts{}))
	// Go's profiler, as Envoy and Linkerd expose theirs on the admin port
	// (which listens on loopback by default).
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		var missing []string
		id, pol := p.shownID.Load(), p.shownPolicy.Load()
		if id == nil {
			missing = append(missing, "svid")
		} else if why := id.notReady(time.Now()); why != "" {
			missing = append(missing, why)
		}
		if pol == nil || !pol.Loaded() {
			missing = append(missing, "policy")
		}
		if p.drain.Load() {
			missing = append(missing, "draining")
		}
		missing = append(missing, p.notReady.list()...)
		if len(missing) > 0 || !p.ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %v\n", missing)
			return
		}
		io.WriteString(w, "ready\n")
	})
	mux.HandleFunc("GET /config", func(w http.ResponseWriter, _ *http.Request) {
		out := map[string]any{"service": p.cfg.Service, "labels": p.cfg.labels, "app": p.cfg.App, "transparent": p.cfg.Transparent}
		ups := map[string]any{}
		for name, u := range p.cfg.upstreams {
			ups[name] = map[string]any{"endpoints": u.Endpoints, "identity": u.ID.String()}
		}
		out["upstreams"] = ups
		id, pol := p.shownID.Load(), p.shownPolicy.Load()
		if id != nil {
			out["spiffe_id"] = id.id.String()
			out["svid_expires_in_seconds"] = int(id.expiresIn())
		}
		if pol != nil {
			out["policy"] = map[string]any{"path": p.cfg.Policy, "revision": pol.Revision(), "files": pol.Files()}
		}
		if dry := p.shownDryRun.Load(); dry != nil && dry.Loaded() {
			out["dryrun_policy"] = map[string]any{"revision": dry.Revision()}
		}
		if res := p.policyRes.snapshot(); len(res) > 0 {
			out["policy_resources"] = res
		}
		if o := p.shownOut.Load(); o != nil {
			out["endpoints"], out["cluster_ips"] = o.state.Load().shown()
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(out)
	})
	return mux
}

// jsonLines is a buffered JSON-lines writer to a file or stdout; a nil
// writer (no path) discards.
type jsonLines struct {
	mu sync.Mutex
	w  *bufio.Writer
	f  *os.File
}

func openJSONLines(path string) (*jsonLines, error) {
	switch path {
	case "":
		return &jsonLines{}, nil
	case "-":
		return &jsonLines{w: bufio.NewWriterSize(os.Stdout, 64<<10)}, nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, err
	}
	return &jsonLines{w: bufio.NewWriterSize(f, 64<<10), f: f}, nil
}

func (j *jsonLines) Write(b []byte) (int, error) {
	if j.w == nil {
		return len(b), nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.w.Write(b)
}

func (j *jsonLines) write(v any) {
	line, err := json.Marshal(v)
	if err != nil {
		return
	}
	j.Write(append(line, '\n'))
}

func (j *jsonLines) Flush() error {
	if j.w == nil {
		return nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.w.Flush()
}

func (j *jsonLines) Close() error {
	err := j.Flush()
	if j.f != nil {
		err = errors.Join(err, j.f.Close())
	}
	return err
}
