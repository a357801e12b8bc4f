// Package rollout is progressive delivery judged by the mesh's own golden
// metrics (`sigil rollout`), as Flagger adds it to Istio and Linkerd: it
// shifts the weights of a service's VirtualService route from one subset
// to another step by step, each step an ordinary apply (audited, visible
// in `sigil get`, reversible), waits an interval, reads the new subset's
// figures (and the old one's) from the server's window, and rolls back to
// 100 % old at the first breach of the bounds, saying why.
//
//	r := rollout.New(cfg, adminClient, adminClient, os.Stdout)
//	err := r.Run(ctx) // nil: the new subset takes 100 %; errors.Is(err, rollout.ErrRolledBack)
package rollout

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/naming"
)

// ErrRolledBack means the rollout put every request back on the old
// subset; the error wrapping it says why.
var ErrRolledBack = errors.New("rollout: rolled back")

// Defaults of `sigil rollout`'s bounds (docs/observability.md).
const (
	DefaultMinRequests = 20
	// DefaultReportDelay is a sidecar's and an agent's default
	// --stats-interval added up.
	DefaultReportDelay = 20 * time.Second
	// patienceFactor is how many intervals a step waits in all for
	// enough requests to judge before it fails safe (rolls back).
	patienceFactor = 3
	// statsResolution is the server window's resolution: figures move in
	// steps of it, so waits for more requests are in steps of it too.
	statsResolution = 10 * time.Second
	// maxWindow is the longest window a query asks for: the server keeps
	// 15 minutes by default.
	maxWindow = 15 * time.Minute
)

// Config is a checked rollout.
type Config struct {
	Namespace, Service string
	// From is the subset traffic leaves ("": the route's other subset);
	// To the one it moves to.
	From, To string
	// Steps are the per cent of requests To gets at each step, rising,
	// the last 100.
	Steps []int
	// Interval is the wait after each step before it is judged.
	Interval time.Duration
	// MinSuccessRate is the least success rate of To, in per cent.
	MinSuccessRate float64
	// MaxSuccessRateDrop is how many points To's success rate may be
	// below From's over the same window (judged when From had at least
	// MinRequests requests).
	MaxSuccessRateDrop float64
	// MaxP99 is the largest p99 latency To may have (0: not judged).
	MaxP99 time.Duration
	// MinRequests is the least number of To's requests a step is judged
	// on; with fewer after Interval×3, the step fails safe.
	MinRequests int
	// ReportDelay is how long a request takes at most to reach the
	// server's figures: the sidecars' --stats-interval plus the agents'.
	// Only reports sent this long after a step began are judged.
	ReportDelay time.Duration
}

// Validate checks the config and names the flag at fault.
func (c Config) Validate() error {
	var errs []error
	if !naming.ValidServiceName(c.Service) {
		errs = append(errs, fmt.Errorf("rollout: service %q: want a DNS label", c.Service))
	}
	if !naming.ValidNamespace(c.Namespace) {
		errs = append(errs, fmt.Errorf("rollout: --namespace %q: want a DNS label", c.Namespace))
	}
	if !naming.ValidServiceName(c.To) {
		errs = append(errs, fmt.Errorf("rollout: --to %q: want a subset name (a DNS label)", c.To))
	}
	if c.From != "" && (!naming.ValidServiceName(c.From) || c.From == c.To) {
		errs = append(errs, fmt.Errorf("rollout: --from %q: want a subset name other than --to", c.From))
	}
	if len(c.Steps) == 0 || c.Steps[len(c.Steps)-1] != 100 {
		errs = append(errs, fmt.Errorf("rollout: --steps %v: want rising per cents ending at 100", c.Steps))
	}
	for i, s := range c.Steps {
		if s < 1 || s > 100 || (i > 0 && s <= c.Steps[i-1]) {
			errs = append(errs, fmt.Errorf("rollout: --steps %v: want rising per cents from 1 to 100", c.Steps))
			break
		}
	}
	if c.Interval < statsResolution {
		errs = append(errs, fmt.Errorf("rollout: --interval %s: at least %s, the resolution of the server's figures", c.Interval, statsResolution))
	}
	if c.MinSuccessRate < 0 || c.MinSuccessRate > 100 {
		errs = append(errs, fmt.Errorf("rollout: --min-success-rate %g: want 0 to 100 (per cent)", c.MinSuccessRate))
	}
	if c.MaxSuccessRateDrop < 0 || c.MaxSuccessRateDrop > 100 {
		errs = append(errs, fmt.Errorf("rollout: --max-success-rate-drop %g: want 0 to 100 (points)", c.MaxSuccessRateDrop))
	}
	if c.MaxP99 < 0 {
		errs = append(errs, fmt.Errorf("rollout: --max-p99 %s: negative", c.MaxP99))
	}
	if c.ReportDelay < 0 || c.ReportDelay > maxWindow/2 {
		errs = append(errs, fmt.Errorf("rollout: --report-delay %s: want 0 to %s", c.ReportDelay, maxWindow/2))
	}
	if c.MinRequests < 1 {
		errs = append(errs, fmt.Errorf("rollout: --min-requests %d: at least 1", c.MinRequests))
	}
	return errors.Join(errs...)
}

// StatsReader reads golden metrics from the server's window (the admin
// client's Stats).
type StatsReader interface {
	Stats(ctx context.Context, q adminv1.StatQuery) (adminv1.StatResponse, error)
}

// ConfigStore reads and applies configuration (the admin client).
type ConfigStore interface {
	ListConfig(ctx context.Context, kind string) ([]adminv1.Resource, error)
	Apply(ctx context.Context, files []adminv1.File, dryRun bool) (adminv1.ApplyResponse, error)
}

// Runner runs one rollout.
type Runner struct {
	cfg   Config
	store ConfigStore
	stats StatsReader
	out   io.Writer
	now   func() time.Time
	// wait blocks for d or until ctx is done (its error then).
	wait func(ctx context.Context, d time.Duration) error
}

// New returns a runner that prints its progress to out, on the real
// clock.
func New(cfg Config, store ConfigStore, stats StatsReader, out io.Writer) *Runner {
	return NewWithClock(cfg, store, stats, out, time.Now, sleep)
}

// NewWithClock is New with the clock given: now reads it and wait blocks
// on it (tests pass a fake that advances now).
func NewWithClock(cfg Config, store ConfigStore, stats StatsReader, out io.Writer, now func() time.Time, wait func(context.Context, time.Duration) error) *Runner {
	return &Runner{cfg: cfg, store: store, stats: stats, out: out, now: now, wait: wait}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Run runs the rollout: nil when To takes 100 % and passed its last
// step; an error wrapping ErrRolledBack when a step breached a bound (or
// could not be judged) and every request went back to From; another
// error when the rollout could not start or a step could not be applied
// (then it also tries to roll back, and says whether that worked). An
// interrupted rollout (ctx done) rolls back too.
func (r *Runner) Run(ctx context.Context) error {
	if err := r.cfg.Validate(); err != nil {
		return err
	}
	vss, err := r.store.ListConfig(ctx, "virtualservices")
	if err != nil {
		return fmt.Errorf("rollout: reading virtualservices: %w", err)
	}
	t, err := findTarget(vss, r.cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(r.out, "rollout of %s.%s from %s to %s through virtualservice %s: steps %v, interval %s\n",
		r.cfg.Service, r.cfg.Namespace, t.from, r.cfg.To, t.name, r.cfg.Steps, r.cfg.Interval)
	for i, w := range r.cfg.Steps {
		if err := r.apply(ctx, t, w); err != nil {
			return r.rollBack(t, fmt.Sprintf("step %d could not be applied: %v", i+1, err))
		}
		fmt.Fprintf(r.out, "step %d/%d: %s at %d %%, %s at %d %%; judging %s of it once reported (in %s)\n", i+1, len(r.cfg.Steps), r.cfg.To, w, t.from, 100-w, r.cfg.Interval, r.cfg.Interval+r.cfg.ReportDelay)
		reason, err := r.judgeStep(ctx, t.from)
		if ctx.Err() != nil {
			return r.rollBack(t, fmt.Sprintf("step %d: interrupted", i+1))
		}
		if err != nil {
			return r.rollBack(t, fmt.Sprintf("step %d: %v", i+1, err))
		}
		if reason != "" {
			return r.rollBack(t, fmt.Sprintf("step %d (%s at %d %%): %s", i+1, r.cfg.To, w, reason))
		}
	}
	fmt.Fprintf(r.out, "rollout complete: %s takes 100 %% of %s.%s\n", r.cfg.To, r.cfg.Service, r.cfg.Namespace)
	return nil
}

// apply sends the route with weight per cent to To.
func (r *Runner) apply(ctx context.Context, t *target, weight int) error {
	f, err := t.withWeights(r.cfg.To, weight)
	if err != nil {
		return err
	}
	resp, err := r.store.Apply(ctx, []adminv1.File{f}, false)
	if err != nil {
		return err
	}
	fmt.Fprintf(r.out, "applied virtualservice %s (config version %d)\n", t.name, resp.Version)
	for _, w := range resp.Warnings {
		fmt.Fprintf(r.out, "warning: %s\n", w)
	}
	return nil
}

// rollBack sends every request back to From, on a context of its own (the
// rollout's may be done), and returns why as an error.
func (r *Runner) rollBack(t *target, why string) error {
	fmt.Fprintf(r.out, "rolling back: %s\n", why)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.apply(ctx, t, 0); err != nil {
		return fmt.Errorf("%w (%s), but the rollback failed too: %v: virtualservice %s/%s still sends part of the traffic to %s", ErrRolledBack, why, err, t.namespace, t.name, r.cfg.To)
	}
	fmt.Fprintf(r.out, "rolled back: %s takes 100 %% again\n", t.from)
	return fmt.Errorf("%w: %s", ErrRolledBack, why)
}

// judgeStep judges the step on figures that count only requests sent
// since it began, over the interval: "" when it passed, else the breach.
// A report reaches the server's window up to ReportDelay after the
// requests it counts, slotted by when it was sent, so it waits the
// interval and ReportDelay, and reads a window of whole slots that starts
// ReportDelay after the step began. With too few requests it waits for
// more, in steps of the figures' resolution, up to the interval ×3 past
// ReportDelay, then fails safe.
func (r *Runner) judgeStep(ctx context.Context, fromSubset string) (string, error) {
	began := r.now()
	clean := began.Add(r.cfg.ReportDelay) // reports slotted from here count only this step
	deadline := clean.Add(patienceFactor * r.cfg.Interval)
	if err := r.wait(ctx, r.cfg.Interval+r.cfg.ReportDelay); err != nil {
		return "", err
	}
	for {
		now := r.now()
		// The window is whole slots, from the last one begun backwards.
		slotStart := time.Unix(0, now.UnixNano()/int64(statsResolution)*int64(statsResolution))
		window := min(slotStart.Sub(clean)/statsResolution*statsResolution, maxWindow)
		if window < statsResolution {
			if err := r.wait(ctx, clean.Add(statsResolution).Sub(slotStart)); err != nil {
				return "", err
			}
			continue
		}
		resp, err := r.stats.Stats(ctx, adminv1.StatQuery{Kind: adminv1.StatSubset, Namespace: r.cfg.Namespace, Name: r.cfg.Service, Window: window})
		if err != nil {
			return "", fmt.Errorf("rollout: reading the figures: %w", err)
		}
		to, from := subsetRow(resp.Rows, r.cfg.To), subsetRow(resp.Rows, fromSubset)
		v := judge(r.cfg, to, from)
		fmt.Fprintf(r.out, "  last %s: %s\n", window, v.figures)
		if !v.tooFew {
			return v.breach, nil
		}
		if !now.Add(statsResolution).Before(deadline) {
			return fmt.Sprintf("too few requests to judge: %d to %s in the last %s, want at least %d (--min-requests); failing safe", to.Requests, r.cfg.To, window, r.cfg.MinRequests), nil
		}
		if err := r.wait(ctx, statsResolution); err != nil {
			return "", err
		}
	}
}

// subsetRow is the row of subset among rows (a zero row when none).
func subsetRow(rows []adminv1.StatRow, subset string) adminv1.StatRow {
	for _, row := range rows {
		if row.Kind == adminv1.StatSubset && row.Subset == subset {
			return row
		}
	}
	return adminv1.StatRow{Kind: adminv1.StatSubset, Subset: subset}
}

// verdict is one judgement of a step.
type verdict struct {
	tooFew  bool
	breach  string // "" when within the bounds
	figures string // the figures judged, for the operator
}

// judge checks To's figures against the bounds and against From's.
func judge(cfg Config, to, from adminv1.StatRow) verdict {
	v := verdict{figures: fmt.Sprintf("%s: %s; %s: %s", cfg.To, describe(to), from.Subset, describe(from))}
	if to.Requests < uint64(cfg.MinRequests) || to.SuccessRate == nil {
		v.tooFew = true
		return v
	}
	sr := 100 * *to.SuccessRate
	switch {
	case sr < cfg.MinSuccessRate:
		v.breach = fmt.Sprintf("success rate %.2f %% is below --min-success-rate %g %%", sr, cfg.MinSuccessRate)
	case cfg.MaxP99 > 0 && to.P99 == nil:
		v.breach = "no p99 latency to judge against --max-p99"
	case cfg.MaxP99 > 0 && *to.P99 > float64(cfg.MaxP99)/float64(time.Millisecond):
		v.breach = fmt.Sprintf("p99 latency %.1f ms is above --max-p99 %s", *to.P99, cfg.MaxP99)
	case from.SuccessRate != nil && from.Requests >= uint64(cfg.MinRequests) && sr < 100**from.SuccessRate-cfg.MaxSuccessRateDrop:
		v.breach = fmt.Sprintf("success rate %.2f %% is more than --max-success-rate-drop %g points below %s's %.2f %%", sr, cfg.MaxSuccessRateDrop, from.Subset, 100**from.SuccessRate)
	}
	return v
}

// describe prints a row's figures.
func describe(row adminv1.StatRow) string {
	if row.Requests == 0 || row.SuccessRate == nil {
		return "no requests"
	}
	s := fmt.Sprintf("%d requests, success rate %.2f %%", row.Requests, 100**row.SuccessRate)
	if row.P99 != nil {
		s += fmt.Sprintf(", p99 %.1f ms", *row.P99)
	}
	return s
}
