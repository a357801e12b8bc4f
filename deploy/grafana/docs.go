package grafana

import (
	"regexp"
	"strings"
)

// Documented is one metric as docs/metrics.md lists it.
type Documented struct {
	// Section is the "## " heading it is listed under (Server, Agent,
	// Sidecar, Sidecar request metrics): which binary serves it.
	Section string
	// Type is the table's type column (counter, gauge, histogram...).
	Type string
	// Words are the backticked words of its section: its labels are
	// among them.
	Words map[string]bool
}

var (
	docRow  = regexp.MustCompile("(?m)^\\| `(sigil_[a-z0-9_]+)` \\| ([a-z]+)")
	docWord = regexp.MustCompile("`([a-zA-Z_][a-zA-Z0-9_]*)`")
)

// DocumentedMetrics reads the metric tables of docs/metrics.md: a row
// whose first cell is a backticked sigil_ name, under a "## " heading.
func DocumentedMetrics(md string) map[string]Documented {
	out := map[string]Documented{}
	for _, sec := range strings.Split(md, "\n## ")[1:] {
		title, body, _ := strings.Cut(sec, "\n")
		words := map[string]bool{}
		for _, m := range docWord.FindAllStringSubmatch(body, -1) {
			words[m[1]] = true
		}
		for _, m := range docRow.FindAllStringSubmatch(body, -1) {
			out[m[1]] = Documented{Section: title, Type: m[2], Words: words}
		}
	}
	return out
}

// Base is the documented name a series name belongs to: a histogram's
// _bucket, _sum and _count series belong to the histogram.
func Base(metric string, docs map[string]Documented) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(metric, suffix); ok && docs[base].Type == "histogram" {
			return base
		}
	}
	return metric
}
