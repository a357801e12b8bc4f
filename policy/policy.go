// Package policy evaluates Sigil's authorization policy: Rego (OPA v1
// syntax) in package sigil.authz, rule allow, compiled once into a prepared
// query and evaluated in process for every request and TCP connection.
//
// Strict mode: a request is allowed only when allow is true. No policy, a
// policy that fails to load, or an evaluation error all deny (fail closed).
// A policy directory is watched; a changed policy is swapped in atomically
// once it compiles, and a broken one is refused while the old stays in force.
package policy

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
)

// Query is the rule every decision asks for.
const Query = "data.sigil.authz.allow"

// Path is Query as decision logs name it.
const Path = "sigil/authz/allow"

// compiled is one loaded policy.
type compiled struct {
	query    rego.PreparedEvalQuery
	revision string
	files    []string
	plan     *keyPlan // nil: decisions are not cached (see cache.go)
	headers  bool     // the plan reads request headers
	cache    *decisionCache
}

// Decision is the outcome of one evaluation.
type Decision struct {
	ID       string
	Allow    bool
	Err      error
	Revision string
	// Mode is the engine's mode (ModeEnforce or ModeDryRun): a dry-run
	// decision is recorded and never blocks.
	Mode string
}

// Modes of an engine (see WithMode), as a Policy resource's spec.mode
// names them.
const (
	ModeEnforce = "enforce"
	ModeDryRun  = "dryrun"
)

// Engine holds the policy in force. Its hooks are given to New as
// Options and never change afterwards, so the first load is seen by them
// like every later one.
type Engine struct {
	path string
	log  *slog.Logger
	cur  atomic.Pointer[compiled]
	// onReload, if set, is told of every load attempt, the first included
	// (for metrics).
	onReload func(ok bool)
	// decisions, if set, receives every decision; the engine owns it and
	// its writer (Flush, Close).
	decisions *decisionLog
	ownsLog   bool // decisions is this engine's (not WithDecisionLogOf)
	// mode is ModeEnforce unless WithMode said otherwise.
	mode string
	// recorder, if set, takes every decision (recorder.go).
	recorder *recorder
}

// WithMode sets the mode every decision of the engine carries
// (ModeEnforce, the default, or ModeDryRun). The engine decides the same
// way in both; callers do not block on a dry-run decision.
func WithMode(mode string) Option {
	return func(e *Engine) { e.mode = mode }
}

// Option sets one of an Engine's hooks at construction (see New).
type Option func(*Engine)

// WithReloadHook has f told of every load attempt, the one New makes
// included: ok is false when the policy was refused.
func WithReloadHook(f func(ok bool)) Option {
	return func(e *Engine) { e.onReload = f }
}

// WithDecisionLog has every decision written to w as a JSON line in the
// shape of OPA's decision logs, with labels on every record (OPA puts the
// instance id and version there; Sigil adds the service). The engine owns
// w from then on: Flush writes out what is buffered (and flushes w too if
// it has a Flush() error method), Close flushes and closes w if it is an
// io.Closer.
func WithDecisionLog(w io.Writer, labels map[string]string) Option {
	return func(e *Engine) { e.decisions, e.ownsLog = newDecisionLog(w, labels), true }
}

// WithDecisionLogOf has the engine write its decisions to the decision
// log of other (made with WithDecisionLog), so the lines of both land
// whole in one file; each line's labels.mode says which engine decided.
// other keeps owning the log: this engine's Flush and Close leave it.
func WithDecisionLogOf(other *Engine) Option {
	return func(e *Engine) { e.decisions = other.decisions }
}

// ErrNoPolicy means no policy is loaded; every decision denies.
var ErrNoPolicy = errors.New("policy: no policy loaded")

// New returns an engine for the .rego files at path (a file or a
// directory, _test.rego files excluded), with its hooks set by opts, and
// loads them once (the reload hook sees that load). A load error is
// returned but the engine stays usable: it denies until a good policy
// appears and Watch loads it. With path "" the engine starts with no
// policy (it denies) and takes its policies from Load.
func New(ctx context.Context, path string, log *slog.Logger, opts ...Option) (*Engine, error) {
	e := &Engine{path: path, log: log, mode: ModeEnforce}
	for _, o := range opts {
		o(e)
	}
	return e, e.Reload(ctx)
}

// Flush writes out the decision records buffered so far; nil without a
// decision log.
func (e *Engine) Flush() error {
	if e.decisions == nil || !e.ownsLog {
		return nil
	}
	return e.decisions.flush()
}

// Close flushes the decision log and closes its writer; nil without a
// decision log. Decisions made afterwards are not logged reliably.
func (e *Engine) Close() error {
	if e.decisions == nil || !e.ownsLog {
		return nil
	}
	return e.decisions.close()
}

// Loaded reports whether a policy is in force.
func (e *Engine) Loaded() bool { return e.cur.Load() != nil }

// Revision is the SHA-256 of the policy in force, or "".
func (e *Engine) Revision() string {
	if c := e.cur.Load(); c != nil {
		return c.revision
	}
	return ""
}

// Files lists the policy files in force.
func (e *Engine) Files() []string {
	if c := e.cur.Load(); c != nil {
		return c.files
	}
	return nil
}

// ReadSources returns the policy files at path (a .rego file, or the
// .rego files under a directory, _test.rego files excluded) as Compile
// takes them: what the sidecar loads, for `sigil policy check`.
func ReadSources(path string) (map[string]string, error) {
	srcs, _, err := readSources(path)
	return srcs, err
}

// readSources returns the policy files under path and their revision.
func readSources(path string) (map[string]string, string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, "", fmt.Errorf("policy: %w", err)
	}
	var files []string
	if st.IsDir() {
		err := filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && strings.HasSuffix(p, ".rego") && !strings.HasSuffix(p, "_test.rego") {
				files = append(files, p)
			}
			return nil
		})
		if err != nil {
			return nil, "", fmt.Errorf("policy: %w", err)
		}
	} else {
		files = []string{path}
	}
	if len(files) == 0 {
		return nil, "", fmt.Errorf("policy: no .rego files in %s", path)
	}
	srcs := make(map[string]string, len(files))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, "", fmt.Errorf("policy: %w", err)
		}
		srcs[f] = string(b)
	}
	return srcs, Digest(srcs), nil
}

// Digest is the SHA-256 (hex) of policy modules, names and texts, in name
// order: the revision of a policy read from a path, and the part after
// "@" of a Policy resource's revision.
func Digest(modules map[string]string) string {
	names := make([]string, 0, len(modules))
	for n := range modules {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		fmt.Fprintf(h, "%s\x00%d\x00", n, len(modules[n]))
		io.WriteString(h, modules[n])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Compile parses and compiles policy sources (file name → Rego) into a
// prepared query, and refuses a policy that compiles but cannot work (see
// validate); it is what a dry run (`sigil policy check`) uses too, so
// check and the sidecar's load accept exactly the same policies.
func Compile(ctx context.Context, srcs map[string]string) (rego.PreparedEvalQuery, error) {
	q, _, err := compile(ctx, srcs)
	return q, err
}

func compile(ctx context.Context, srcs map[string]string) (rego.PreparedEvalQuery, []*ast.Module, error) {
	var mods []*ast.Module
	opts := []func(*rego.Rego){rego.Query(Query), rego.SetRegoVersion(ast.RegoV1), rego.StrictBuiltinErrors(true), rego.Capabilities(Capabilities())}
	hasPackage := false
	names := make([]string, 0, len(srcs))
	for name := range srcs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		m, err := ast.ParseModuleWithOpts(name, srcs[name], ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			return rego.PreparedEvalQuery{}, nil, fmt.Errorf("policy: %w", err)
		}
		if m.Package.Path.String() == "data.sigil.authz" {
			hasPackage = true
		}
		mods = append(mods, m)
		opts = append(opts, rego.ParsedModule(m))
	}
	if !hasPackage {
		return rego.PreparedEvalQuery{}, nil, errors.New("policy: no module declares package sigil.authz")
	}
	q, err := rego.New(opts...).PrepareForEval(ctx)
	if err != nil {
		return rego.PreparedEvalQuery{}, nil, fmt.Errorf("policy: %w", err)
	}
	if err := validate(ctx, q, mods); err != nil {
		return rego.PreparedEvalQuery{}, nil, err
	}
	return q, mods, nil
}

// Reload loads the policy if it changed. On error the policy in force
// stays, and the error is returned (and logged by Watch). An engine with
// no path (see New) has nothing to reload: it returns nil, and its policy
// comes from Load.
func (e *Engine) Reload(ctx context.Context) error {
	if e.path == "" {
		return nil
	}
	srcs, rev, err := readSources(e.path)
	if err == nil {
		if c := e.cur.Load(); c != nil && c.revision == rev {
			return nil // unchanged: not a load
		}
		err = e.install(ctx, Source{Modules: srcs, Revision: rev})
	}
	if e.onReload != nil {
		e.onReload(err == nil)
	}
	return err
}

// Source is a policy held in memory rather than read from a path: Rego
// modules (file name → text, _test.rego modules excluded) and the
// revision decisions carry while it is in force (a Policy resource's
// "<namespace>/<name>@<digest prefix>", see Revision).
type Source struct {
	Modules  map[string]string
	Revision string
}

// Load compiles src and puts it in force atomically, unless its revision
// is the one in force already (then it does nothing). A policy that does
// not compile is refused and the one in force stays (none: every
// decision denies). The reload hook is told of the attempt.
func (e *Engine) Load(ctx context.Context, src Source) error {
	if c := e.cur.Load(); c != nil && c.revision == src.Revision {
		return nil
	}
	err := e.install(ctx, src)
	if e.onReload != nil {
		e.onReload(err == nil)
	}
	return err
}

// Clear takes the policy out of force: from now on every decision denies
// with ErrNoPolicy (an enforcing engine) or is not made (callers skip a
// dry-run engine that is not Loaded).
func (e *Engine) Clear() {
	if e.cur.Swap(nil) != nil {
		e.log.Info("policy removed", "mode", e.mode)
	}
}

// install compiles src and swaps it in.
func (e *Engine) install(ctx context.Context, src Source) error {
	q, mods, err := compile(ctx, src.Modules)
	if err != nil {
		return err
	}
	files := make([]string, 0, len(src.Modules))
	for f := range src.Modules {
		files = append(files, f)
	}
	sort.Strings(files)
	plan, why := planFor(mods)
	e.cur.Store(&compiled{query: q, revision: src.Revision, files: files, plan: plan, headers: plan != nil && plan.readsHeaders(), cache: &decisionCache{m: map[string]bool{}}})
	rev := src.Revision
	if len(rev) > 12 && !strings.Contains(rev, "@") {
		rev = rev[:12]
	}
	if plan != nil {
		e.log.Info("policy loaded", "revision", rev, "mode", e.mode, "files", len(files), "decision_cache", "on", "input_paths", len(plan.paths))
	} else {
		e.log.Info("policy loaded", "revision", rev, "mode", e.mode, "files", len(files), "decision_cache", "off", "why", why)
	}
	return nil
}

// Watch reloads the policy when its files change, every interval, until
// ctx is done.
func (e *Engine) Watch(ctx context.Context, interval time.Duration) {
	if e.path == "" {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := e.Reload(ctx); err != nil {
			if err.Error() != lastErr {
				e.log.Error("policy refused; the policy in force stays", "error", err, "revision", e.Revision())
			}
			lastErr = err.Error()
			continue
		}
		lastErr = ""
	}
}

// CacheSize is the bytes (keys plus a per-entry overhead, bounded by
// MaxCacheBytes) and the entries of the decision cache of the policy in
// force; zeros when none is loaded.
func (e *Engine) CacheSize() (bytes, entries int) {
	c := e.cur.Load()
	if c == nil || c.cache == nil {
		return 0, 0
	}
	return c.cache.size()
}

// Settled reports whether Decide would decide in without evaluating the
// policy: its decision is in the cache of the policy in force, or no
// policy is loaded. A caller that must not block (an event loop) asks
// Decide at once when it is, and on a goroutine of its own when not.
// It is a hint: a reload, or the cache starting over, in between makes
// Decide evaluate after all.
func (e *Engine) Settled(in *Input) bool {
	c := e.cur.Load()
	if c == nil {
		return true
	}
	if c.plan == nil {
		return false
	}
	e.prepare(c, in)
	_, ok := c.cache.get(c.plan.key(in))
	return ok
}

// prepare makes in ready to be decided by c (nil: no policy loaded) and
// logged: the path's parts, and the query and headers where they will
// be read.
func (e *Engine) prepare(c *compiled, in *Input) {
	in.Request.fill()
	if e.decisions != nil && in.Request.parsedQuery() == nil {
		// Logged as the policy sees it: {}, not null.
		in.Request.Query = map[string][]string{}
	}
	if in.Request.Headers == nil && in.Request.HeadersFrom != nil &&
		(e.decisions != nil || c != nil && (c.plan == nil || c.headers)) {
		// Decided against the policy loaded above, so a reload in between
		// cannot leave a policy that reads headers without them.
		in.Request.Headers = in.Request.HeadersFrom()
	}
}

// Decide evaluates the policy for in. Anything but allow == true denies.
func (e *Engine) Decide(ctx context.Context, in *Input) Decision {
	d := Decision{ID: newID(), Mode: e.mode}
	c := e.cur.Load()
	e.prepare(c, in)
	if c == nil {
		d.Err = ErrNoPolicy
	} else {
		d.Revision = c.revision
		key := ""
		cached := false
		if c.plan != nil {
			key = c.plan.key(in)
			d.Allow, cached = c.cache.get(key)
		}
		if !cached {
			rs, err := c.query.Eval(ctx, rego.EvalParsedInput(in.value()))
			switch {
			case err != nil:
				d.Err = fmt.Errorf("policy: evaluation: %w", scrub(err, in))
			case len(rs) == 1 && len(rs[0].Expressions) == 1:
				d.Allow = rs[0].Expressions[0].Value == true
			}
			// Errors are never cached: they deny now and are retried next time.
			if c.plan != nil && d.Err == nil {
				c.cache.put(key, d.Allow)
			}
		}
	}
	if e.decisions != nil {
		e.decisions.log(in, d, time.Now())
	}
	return e.record(in, d)
}

// newID returns a random (version 4) UUID as a decision's id, as OPA's
// decision ids are: receivers of the audit stream drop duplicates by it
// (docs/audit.md), so it is all random, from crypto/rand. Read into a
// UUID on the stack (crypto/rand.Read keeps its buffer there, where
// uuid.NewRandom's io.ReadFull moves it to the heap): one allocation, the
// string.
func newID() string {
	var u uuid.UUID
	rand.Read(u[:])         // never fails: crypto/rand crashes the program instead
	u[6] = u[6]&0x0f | 0x40 // version 4 (RFC 9562 §5.4)
	u[8] = u[8]&0x3f | 0x80 // variant 10
	return u.String()
}
