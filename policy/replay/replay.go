// Package replay re-decides recorded authorization decisions under two
// policies and says which request classes a policy change would flip:
// the engine of `sigil policy diff`.
//
// Decisions come from the sidecars' decision logs or the server's audit
// export (see Read). Each recorded input is evaluated under the base and
// the proposed policy, compiled as a sidecar compiles them
// (policy.Compile, policy.Evaluate), so a difference here is a difference
// a sidecar would make. Decisions whose outcome changes are grouped into
// request classes: source identity, destination identity and service,
// protocol, method and URL path (the path without its query: query
// strings are not part of a class).
//
//	base, err := replay.Load(ctx, "policies/")
//	proposed, err := replay.Load(ctx, "proposed/")
//	d := replay.NewDiff(base, proposed)
//	err = d.ReadFrom(ctx, f, "decisions.log")
//	rep := d.Report()
//	rep.Markdown(os.Stdout)
package replay

import (
	"context"
	"fmt"
	"io"
	"sort"

	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/sigil-mesh/sigil/policy"
)

// Policy is one side of a diff: a policy compiled as a sidecar compiles it.
type Policy struct {
	// Path is the directory or file it was read from.
	Path string
	// Revision is the revision a sidecar loading Path reports
	// (policy.Engine.Revision).
	Revision string
	query    rego.PreparedEvalQuery
}

// Load reads and compiles the policy at path (a directory of .rego files,
// _test.rego excluded, or one file) as a sidecar does. An error names
// path and what is wrong (missing, no .rego files, a compile error with
// its file and line).
func Load(ctx context.Context, path string) (Policy, error) {
	srcs, rev, err := policy.ReadSourcesRevision(path)
	if err != nil {
		return Policy{}, fmt.Errorf("replay: %s: %w", path, err)
	}
	q, err := policy.Compile(ctx, srcs)
	if err != nil {
		return Policy{}, fmt.Errorf("replay: %s does not compile: %w", path, err)
	}
	return Policy{Path: path, Revision: rev, query: q}, nil
}

// Directions of a change.
const (
	// AllowToDeny: the base policy allows, the proposed denies (a
	// tightening: requests that work today would fail).
	AllowToDeny = "allow_to_deny"
	// DenyToAllow: the base policy denies, the proposed allows.
	DenyToAllow = "deny_to_allow"
)

// Class is a request class: the decisions a change is reported by.
type Class struct {
	Source               string `json:"source"`
	DestinationPrincipal string `json:"destination_principal"`
	DestinationService   string `json:"destination_service"`
	Protocol             string `json:"protocol"`
	Method               string `json:"method"`
	// Path is the request's url_path: its query is not part of the class.
	Path string `json:"path"`
}

// Change is a request class whose decisions flip.
type Change struct {
	Class
	// Direction is AllowToDeny or DenyToAllow.
	Direction string `json:"direction"`
	// Count is how many replayed decisions of the class flip.
	Count int `json:"count"`
	// Example is the decision_id of the first of them, ExampleAt where
	// it was recorded (FILE:LINE).
	Example   string `json:"example_decision_id"`
	ExampleAt string `json:"example_at"`
	// Error is the evaluation error of the example under the policy that
	// denies it, when an error (not the policy's rules) denied it.
	Error string `json:"error,omitempty"`
}

// SkipGroup counts the records skipped for one reason.
type SkipGroup struct {
	Reason string `json:"reason"`
	Count  int    `json:"count"`
	// Where lists the first few places (FILE:LINE) skipped for it.
	Where []string `json:"where"`
}

// maxSkipExamples bounds SkipGroup.Where.
const maxSkipExamples = 5

// Side names one policy of a report.
type Side struct {
	Path     string `json:"path"`
	Revision string `json:"revision"`
}

// Report is the outcome of a diff.
type Report struct {
	Base     Side `json:"base"`
	Proposed Side `json:"proposed"`
	// Replayed is the number of decisions evaluated under both policies;
	// Unchanged + Changed == Replayed. Tightened and Loosened split
	// Changed by direction.
	Replayed  int `json:"replayed"`
	Unchanged int `json:"unchanged"`
	Changed   int `json:"changed"`
	Tightened int `json:"allow_to_deny"`
	Loosened  int `json:"deny_to_allow"`
	// NotAsRecorded counts decisions the base policy decides otherwise
	// than the log recorded: the log was made under another policy (or
	// another input schema), so the base is not what was in force.
	NotAsRecorded int `json:"not_as_recorded"`
	// Masked counts replayed decisions whose recorded input had paths
	// erased or masked (a header, ...): they replay without them.
	Masked int `json:"masked"`
	// Changes lists the classes that flip: AllowToDeny first, then by
	// count, largest first.
	Changes []Change    `json:"changes"`
	Skipped []SkipGroup `json:"skipped"`
}

// SkippedTotal is the number of records skipped for any reason.
func (r Report) SkippedTotal() int {
	n := 0
	for _, s := range r.Skipped {
		n += s.Count
	}
	return n
}

// Diff accumulates replayed decisions. It is not safe for concurrent use.
type Diff struct {
	base, proposed Policy
	rep            Report
	classes        map[classKey]*Change
	skips          map[string]*SkipGroup
}

type classKey struct {
	Class
	direction string
}

// NewDiff returns a diff of base against proposed with nothing replayed.
func NewDiff(base, proposed Policy) *Diff {
	return &Diff{
		base: base, proposed: proposed,
		rep:     Report{Base: Side{base.Path, base.Revision}, Proposed: Side{proposed.Path, proposed.Revision}},
		classes: map[classKey]*Change{},
		skips:   map[string]*SkipGroup{},
	}
}

// ReadFrom reads the decision log r (named name, see Read) and replays
// every decision in it.
func (d *Diff) ReadFrom(ctx context.Context, r io.Reader, name string) error {
	skips, err := Read(r, name, func(rec Recorded) error {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("replay: %w", err)
		}
		d.Add(ctx, rec)
		return nil
	})
	for _, s := range skips {
		d.Skip(s)
	}
	return err
}

// Skip counts s among the skipped records.
func (d *Diff) Skip(s Skip) {
	g := d.skips[s.Reason]
	if g == nil {
		g = &SkipGroup{Reason: s.Reason}
		d.skips[s.Reason] = g
	}
	g.Count++
	if len(g.Where) < maxSkipExamples {
		g.Where = append(g.Where, s.Where)
	}
}

// Add replays one recorded decision under both policies. An evaluation
// error denies, as it does in a sidecar.
func (d *Diff) Add(ctx context.Context, rec Recorded) {
	baseAllow, baseErr := policy.Evaluate(ctx, d.base.query, &rec.Input)
	newAllow, newErr := policy.Evaluate(ctx, d.proposed.query, &rec.Input)
	d.rep.Replayed++
	if len(rec.Masked) > 0 {
		d.rep.Masked++
	}
	recorded := rec.Result != nil && *rec.Result
	if recorded != baseAllow || (rec.Result == nil) != (baseErr != nil) {
		d.rep.NotAsRecorded++
	}
	if baseAllow == newAllow {
		d.rep.Unchanged++
		return
	}
	d.rep.Changed++
	dir, denyErr := AllowToDeny, newErr
	if newAllow {
		dir, denyErr = DenyToAllow, baseErr
		d.rep.Loosened++
	} else {
		d.rep.Tightened++
	}
	in := rec.Input
	k := classKey{Class: Class{
		Source: in.Source.Principal, DestinationPrincipal: in.Destination.Principal, DestinationService: in.Destination.Service,
		Protocol: in.Request.Protocol, Method: in.Request.Method, Path: in.Request.URLPath,
	}, direction: dir}
	c := d.classes[k]
	if c == nil {
		c = &Change{Class: k.Class, Direction: dir, Example: rec.ID, ExampleAt: rec.Where}
		if denyErr != nil {
			c.Error = denyErr.Error()
		}
		d.classes[k] = c
	}
	c.Count++
}

// Report returns the outcome so far, sorted (see Report.Changes).
func (d *Diff) Report() Report {
	rep := d.rep
	rep.Changes = make([]Change, 0, len(d.classes))
	for _, c := range d.classes {
		rep.Changes = append(rep.Changes, *c)
	}
	sort.Slice(rep.Changes, func(i, j int) bool {
		a, b := rep.Changes[i], rep.Changes[j]
		if a.Direction != b.Direction {
			return a.Direction == AllowToDeny
		}
		if a.Count != b.Count {
			return a.Count > b.Count
		}
		return a.Example < b.Example
	})
	rep.Skipped = make([]SkipGroup, 0, len(d.skips))
	for _, g := range d.skips {
		rep.Skipped = append(rep.Skipped, *g)
	}
	sort.Slice(rep.Skipped, func(i, j int) bool {
		if rep.Skipped[i].Count != rep.Skipped[j].Count {
			return rep.Skipped[i].Count > rep.Skipped[j].Count
		}
		return rep.Skipped[i].Reason < rep.Skipped[j].Reason
	})
	return rep
}
