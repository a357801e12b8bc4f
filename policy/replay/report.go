package replay

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/sigil-mesh/sigil/internal/markdown"
)

// arrow prints a direction.
func arrow(dir string) string {
	if dir == AllowToDeny {
		return "allow → deny"
	}
	return "deny → allow"
}

// shortRev is a revision as headings show it (12 hex digits, as the
// sidecar logs it).
func shortRev(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}

// method is a class's method, or its protocol where it has none (TCP).
func (c Class) method() string {
	if c.Method == "" {
		return "(" + c.Protocol + ")"
	}
	return c.Method
}

// destination is a class's destination: service and principal.
func (c Class) destination() string {
	if c.DestinationService == "" {
		return c.DestinationPrincipal
	}
	return c.DestinationService + " (" + c.DestinationPrincipal + ")"
}

func (r Report) summary() string {
	return fmt.Sprintf("%d decisions replayed: %d unchanged, %d changed (%d allow → deny, %d deny → allow); %d skipped",
		r.Replayed, r.Unchanged, r.Changed, r.Tightened, r.Loosened, r.SkippedTotal())
}

// Text writes the report for a terminal.
func (r Report) Text(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "base:     %s (revision %s)\nproposed: %s (revision %s)\n", r.Base.Path, shortRev(r.Base.Revision), r.Proposed.Path, shortRev(r.Proposed.Revision))
	fmt.Fprintf(&b, "%s\n", r.summary())
	for _, c := range r.Changes {
		fmt.Fprintf(&b, "\n%s  %d decisions\n  source:      %s\n  destination: %s\n  request:     %s %s\n  example:     %s (%s)\n",
			arrow(c.Direction), c.Count, c.Source, c.destination(), c.method(), c.Path, c.Example, c.ExampleAt)
		if c.Error != "" {
			fmt.Fprintf(&b, "  error:       %s\n", c.Error)
		}
	}
	r.textNotes(&b)
	_, err := io.WriteString(w, b.String())
	return err
}

func (r Report) textNotes(b *strings.Builder) {
	if r.NotAsRecorded > 0 {
		fmt.Fprintf(b, "\nnote: the base policy decides %d of the replayed decisions otherwise than they were recorded: the logs were not made under it\n", r.NotAsRecorded)
	}
	if r.Masked > 0 {
		fmt.Fprintf(b, "note: %d replayed decisions had input fields erased before they were recorded, and replay without them\n", r.Masked)
	}
	for _, s := range r.Skipped {
		fmt.Fprintf(b, "skipped %d: %s (%s", s.Count, s.Reason, strings.Join(s.Where, "; "))
		if s.Count > len(s.Where) {
			b.WriteString("; ...")
		}
		b.WriteString(")\n")
	}
}

// Markdown writes the report as a pull-request comment: a heading with
// both revisions, the totals, and a table of the changed classes, allow →
// deny first. Every recorded value is escaped, so a path cannot break
// the table or add markup.
func (r Report) Markdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "### Policy diff: `%s` → `%s`\n\n", shortRev(r.Base.Revision), shortRev(r.Proposed.Revision))
	fmt.Fprintf(&b, "Base %s, proposed %s.\n\n", markdown.Code(r.Base.Path), markdown.Code(r.Proposed.Path))
	fmt.Fprintf(&b, "%s.\n\n", r.summary())
	if len(r.Changes) == 0 {
		b.WriteString("No request class changes its decision.\n")
	} else {
		b.WriteString("| Change | Decisions | Source | Destination | Method | Path | Example decision |\n")
		b.WriteString("|---|---:|---|---|---|---|---|\n")
		for _, c := range r.Changes {
			ex := markdown.Code(c.Example)
			if c.Error != "" {
				ex += " (error: " + markdown.Text(c.Error) + ")"
			}
			fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s |\n", markdown.Text(arrow(c.Direction)), c.Count,
				markdown.Code(c.Source), markdown.Code(c.destination()), markdown.Code(c.method()), markdown.Code(c.Path), ex)
		}
	}
	if r.NotAsRecorded > 0 || r.Masked > 0 || len(r.Skipped) > 0 {
		b.WriteString("\n")
	}
	if r.NotAsRecorded > 0 {
		fmt.Fprintf(&b, "- Note: the base policy decides %d of the replayed decisions otherwise than they were recorded: the logs were not made under it.\n", r.NotAsRecorded)
	}
	if r.Masked > 0 {
		fmt.Fprintf(&b, "- Note: %d replayed decisions had input fields erased before they were recorded, and replay without them.\n", r.Masked)
	}
	for _, s := range r.Skipped {
		fmt.Fprintf(&b, "- Skipped %d: %s (first at %s)\n", s.Count, markdown.Text(s.Reason), markdown.Code(s.Where[0]))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// JSON writes the report as one JSON object (the fields of Report).
func (r Report) JSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	return nil
}
