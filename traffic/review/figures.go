package review

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/internal/markdown"
)

// Figures is today's traffic as the server's stats window has it: the
// requests callers' sidecars sent to each service, by VirtualService
// route name and by subset. Built by NewFigures, or NoFigures when there
// are none: a share is only ever computed from these counts, never
// guessed.
type Figures struct {
	window      time.Duration
	end         time.Time
	routes      map[Service]map[string]uint64
	subsets     map[Service]map[string]uint64
	conns       map[Service]map[string]uint64 // TCP connections by subset
	unavailable string
}

// NewFigures reads the answers to GET /v1/stats for route rows
// (adminv1.StatRoute) and subset rows (adminv1.StatSubset) of one window.
func NewFigures(routes, subsets adminv1.StatResponse) *Figures {
	f := &Figures{window: routes.Window, end: routes.End, routes: map[Service]map[string]uint64{}, subsets: map[Service]map[string]uint64{}, conns: map[Service]map[string]uint64{}}
	for _, r := range routes.Rows {
		s := Service{Namespace: r.Namespace, Name: r.Name}
		if f.routes[s] == nil {
			f.routes[s] = map[string]uint64{}
		}
		f.routes[s][r.Route] += r.Requests
	}
	for _, r := range subsets.Rows {
		s := Service{Namespace: r.Namespace, Name: r.Name}
		if f.subsets[s] == nil {
			f.subsets[s], f.conns[s] = map[string]uint64{}, map[string]uint64{}
		}
		f.subsets[s][r.Subset] += r.Requests
		f.conns[s][r.Subset] += r.TCPConnections
	}
	return f
}

// NoFigures stands for figures that could not be had, and why (the
// server is not reachable, ...).
func NoFigures(why string) *Figures { return &Figures{unavailable: why} }

// total is the requests (or TCP connections) to the services in the
// window.
func (f *Figures) total(svcs []Service, connections bool) uint64 {
	by := f.routes
	if connections {
		by = f.conns
	}
	var n uint64
	for _, s := range svcs {
		for _, c := range by[s] {
			n += c
		}
	}
	return n
}

func names(svcs []Service) string {
	out := make([]string, len(svcs))
	for i, s := range svcs {
		out[i] = s.String()
	}
	return strings.Join(out, ", ")
}

func share(n, of uint64) string {
	return strconv.FormatFloat(100*float64(n)/float64(of), 'f', 1, 64) + " %"
}

// Touched says how much of today's traffic c would touch, from the
// figures only.
func (f *Figures) Touched(c Change) string {
	const none = "no live traffic data"
	if f == nil || f.unavailable != "" {
		if f != nil {
			return none + " (" + f.unavailable + ")"
		}
		return none
	}
	if len(c.Services) == 0 {
		return none + " (the hosts name no mesh service)"
	}
	unit, perSubset := "requests", f.subsets
	if c.Connections {
		unit, perSubset = "TCP connections", f.conns
	}
	total := f.total(c.Services, c.Connections)
	if total == 0 {
		return fmt.Sprintf("%s (no %s to %s in the last %v)", none, unit, names(c.Services), f.window)
	}
	var n uint64
	switch {
	case c.Subset != "":
		for _, s := range c.Services {
			n += perSubset[s][c.Subset]
		}
	case c.WholeService:
		n = total
	case c.RouteName != "" && !c.Connections:
		for _, s := range c.Services {
			n += f.routes[s][c.RouteName]
		}
	case c.Connections:
		return fmt.Sprintf("not measured on its own (one of several %s routes): %s had %d %s in the last %v", strings.SplitN(c.Route, "[", 2)[0], names(c.Services), total, unit, f.window)
	default:
		return fmt.Sprintf("not measured on its own (an unnamed route; name it to measure it): %s had %d %s in the last %v", names(c.Services), total, unit, f.window)
	}
	out := fmt.Sprintf("%s (%d of %d %s to %s in the last %v)", share(n, total), n, total, unit, names(c.Services), f.window)
	if c.Percent < 100 && n > 0 {
		out += fmt.Sprintf("; applies to %s of them, about %s of the service's", fmtPct(c.Percent), strconv.FormatFloat(float64(n)*c.Percent/float64(total), 'f', 1, 64)+" %")
	}
	if c.Kind == KindWeights {
		var parts []string
		for _, w := range c.Weights {
			if w.Subset != "" {
				// Callers' sidecars count a request under the service
				// the app asked for, with the subset the route chose.
				var n uint64
				for _, s := range c.Services {
					n += perSubset[s][w.Subset]
				}
				parts = append(parts, fmt.Sprintf("%s %d", w.Destination, n))
			}
		}
		if len(parts) > 0 {
			out += "; " + unit + " per subset now: " + strings.Join(parts, ", ")
		}
	}
	return out
}

// Markdown writes the review as a pull-request comment: one table row per
// change, with the traffic it would touch.
func Markdown(w io.Writer, changes []Change, f *Figures) error {
	var b strings.Builder
	b.WriteString("### Traffic review (dry run: nothing applied)\n\n")
	switch {
	case f == nil || f.unavailable != "":
		b.WriteString("Traffic shares: no live traffic data")
		if f != nil {
			b.WriteString(" (" + markdown.Text(f.unavailable) + ")")
		}
		b.WriteString(".\n\n")
	default:
		fmt.Fprintf(&b, "Traffic shares: the server's stats window, the last %v up to %s, as the callers' sidecars counted requests.\n\n", f.window, f.end.UTC().Format(time.RFC3339))
	}
	if len(changes) == 0 {
		b.WriteString("No change rewrites or removes headers, rewrites paths, injects faults, mirrors, redirects, answers directly, shifts weights or removes a resource, route or subset.\n")
	} else {
		b.WriteString("| Resource | Route | Change | Traffic it would touch |\n|---|---|---|---|\n")
		for _, c := range changes {
			route := c.Route
			if c.Subset != "" {
				route = "subset " + c.Subset
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", markdown.Text(c.Resource), markdown.Code(route), markdown.Text(c.What), markdown.Text(f.Touched(c)))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
