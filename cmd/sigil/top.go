package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"text/tabwriter"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/cmd/internal/termsafe"
	"github.com/spf13/cobra"
)

// topRows bounds the rows `sigil top` shows (the busiest).
const topRows = 20

// topMaxKeys bounds the distinct (direction, method, path) rows `sigil
// top` keeps: a service whose paths carry ids would otherwise grow the
// table for as long as top runs. Past it, new keys are counted in one row
// per direction whose method is "*" and path is topOtherPath.
const topMaxKeys = 10000

// topOtherPath is the path of the rows that count what topMaxKeys left out.
const topOtherPath = "(other)"

// topKey is one row of `sigil top`.
type topKey struct{ direction, method, path string }

// topRow is what `sigil top` counted for one key.
type topRow struct {
	topKey
	count, ok         int
	best, worst, last float64 // latency, ms
}

// topTable counts tap events by direction, method and path. Safe for
// concurrent use.
type topTable struct {
	mu   sync.Mutex
	rows map[topKey]*topRow
}

func newTopTable() *topTable { return &topTable{rows: map[topKey]*topRow{}} }

// add counts one event. A request succeeded when it was answered with a
// status below 500 (as sigil stat counts).
func (t *topTable) add(ev *adminv1.TapEvent) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := topKey{ev.Direction, ev.Method, ev.Path}
	r := t.rows[k]
	if r == nil && len(t.rows) >= topMaxKeys {
		k = topKey{ev.Direction, "*", topOtherPath}
		r = t.rows[k]
	}
	if r == nil {
		r = &topRow{topKey: k, best: ev.LatencyMS, worst: ev.LatencyMS}
		t.rows[k] = r
	}
	r.count++
	if ev.Status != 0 && ev.Status < 500 {
		r.ok++
	}
	r.best, r.worst, r.last = min(r.best, ev.LatencyMS), max(r.worst, ev.LatencyMS), ev.LatencyMS
}

// busiest returns up to n rows, the most requests first.
func (t *topTable) busiest(n int) []topRow {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]topRow, 0, len(t.rows))
	for _, r := range t.rows {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].count != out[j].count {
			return out[i].count > out[j].count
		}
		a, b := out[i].topKey, out[j].topKey
		return a.direction+a.method+a.path < b.direction+b.method+b.path
	})
	return out[:min(n, len(out))]
}

// render prints the table.
func (t *topTable) render(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DIRECTION\tMETHOD\tPATH\tCOUNT\tBEST\tWORST\tLAST\tSUCCESS RATE")
	for _, r := range t.busiest(topRows) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.1fms\t%.1fms\t%.1fms\t%.2f%%\n", r.direction, termsafe.Field(r.method), termsafe.Field(r.path),
			r.count, r.best, r.worst, r.last, 100*float64(r.ok)/float64(r.count))
	}
	return tw.Flush()
}

func newTop(client clientFunc) *cobra.Command {
	var flags tapFlags
	var once time.Duration
	cmd := &cobra.Command{
		Use:   "top SERVICE",
		Short: "Show a service's busiest paths, live, from a sample of its requests (as linkerd viz top)",
		Long: `Show a live table of the busiest (direction, method, path) of the
service's requests, with their count, best, worst and last latency, and
success rate, redrawn every second. It reads sigil tap's stream (the same
bounds and the same fields: never headers, bodies or queries). --once D
prints one table after D and exits.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			table := newTopTable()
			tapErr := make(chan error, 1)
			go func() { tapErr <- runTop(ctx, c, flags.request(args[0], adminv1.TapMaxEvents), table) }()
			w := cmd.OutOrStdout()
			if once > 0 {
				select {
				case <-time.After(once):
				case err := <-tapErr:
					return err
				}
				return table.render(w)
			}
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			clear := isTerminal(os.Stdout)
			for {
				select {
				case <-ctx.Done():
					return nil
				case err := <-tapErr:
					return err
				case <-tick.C:
				}
				if clear {
					// Our own escape (home, clear) straight to the
					// terminal; the table itself goes through termsafe.
					fmt.Fprint(os.Stdout, "\x1b[H\x1b[2J")
				} else {
					fmt.Fprintln(w)
				}
				if err := table.render(w); err != nil {
					return err
				}
			}
		},
	}
	flags.add(cmd)
	cmd.Flags().DurationVar(&once, "once", 0, "print one table after this long and exit (for scripts)")
	return cmd
}

// runTop feeds taps of the service into table until ctx is done, starting
// a new tap whenever one reaches its number of events.
func runTop(ctx context.Context, c *adminv1.AdminClient, req adminv1.TapRequest, table *topTable) error {
	for {
		err := c.Tap(ctx, req, func(line adminv1.TapLine) error {
			if line.Event != nil {
				table.add(line.Event)
			}
			return nil
		})
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
