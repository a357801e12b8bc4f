package lint

import (
	"regexp"
	"strings"
	"testing"
)

// measured matches the shapes of a measured figure in prose: a time in ns
// or µs, an approximate time or size, a ratio to a baseline, a count of
// allocations, a percentage gained or lost. Limits and defaults ("at most
// 20%", "1 s") do not match.
var measured = regexp.MustCompile(`\b\d+(\.\d+)? ?(ns|µs)\b` +
	`|~ ?\d+(\.\d+)? ?(ns|µs|ms|s|KB|MB|GB|KiB|MiB)\b` +
	`|\b0\.\d+ of \b` +
	`|\b\d+ allocations\b` +
	`|\d+(\.\d+)? ?% (more|less|lower|higher|fewer|faster|slower)\b` +
	`|\d+(\.\d+)? ?% of (the|a|its) (sidecar|inbound|outbound|instructions|CPU|time)`)

// Measured figures live in bench/README.md, where the way to re-measure
// them sits beside them; a comment keeps the reason (figures once quoted
// in the code went stale there: "12 %", "0.57 of net/http's time").
func TestNoFiguresInComments(t *testing.T) {
	for _, p := range packages(t) {
		for _, f := range p.files {
			for _, g := range f.Comments {
				text := strings.Join(strings.Fields(g.Text()), " ")
				if m := measured.FindString(text); m != "" {
					t.Errorf("%s: comment quotes a measured figure (%q): move it to bench/README.md (\"Figures once quoted in the code\") and keep the reason", p.fset.Position(g.Pos()), m)
				}
			}
		}
	}
}
