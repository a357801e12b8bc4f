package main

import (
	"fmt"
	"log"
	"slices"
	"strings"
	"time"
)

// scalePoint is one point of the scaling curve: connections held by the
// load generator and bytes per response.
type scalePoint struct{ conns, size int }

// scalePoints are the curve's points: connections at 1 KiB, then
// response sizes at 16 connections (16 × 1 KiB measured once).
var scalePoints = []scalePoint{
	{1, 1024}, {16, 1024}, {64, 1024}, {256, 1024},
	{16, 100}, {16, 64 << 10}, {16, 1 << 20},
}

// scaling runs the curve: at every point, each setup (direct first)
// closed-loop at saturation for dur after a warm-up of warm, fortio
// keep-alive. Rows are "scaling" results with Conns and RespBytes set,
// RatioQPS against direct at the same point.
func (e *env) scaling(setups []*setup, dur, warm time.Duration, fail func(string, error)) []Result {
	var out []Result
	for _, pt := range scalePoints {
		var base float64
		for _, s := range setups {
			what := fmt.Sprintf("scaling %dconn %s/%s", pt.conns, sizeName(pt.size), s.name)
			load := []string{"-qps", "0", "-c", fmt.Sprint(pt.conns)}
			if kb := pt.size/1024 + 16; kb > 128 {
				// fortio's client reads a response into one buffer
				// (-httpbufferkb, 128 KiB by default) and fails the
				// requests it cannot hold.
				load = append(load, "-httpbufferkb", fmt.Sprint(kb))
			}
			if warm > 0 {
				if _, err := e.fortioSized(s, pt.size, append(load, "-t", warm.String())...); err != nil {
					fail(what+" warm-up", err)
					continue
				}
			}
			r, err := e.fortioSized(s, pt.size, append(load, "-t", dur.String())...)
			if err != nil {
				fail(what, err)
				continue
			}
			r.Scenario, r.Conns, r.RespBytes = "scaling", pt.conns, pt.size
			if s.name == "direct" {
				base = r.QPS
			} else if base > 0 {
				r.RatioQPS = r.QPS / base
			}
			log.Printf("%s: %.0f rps (%.2f of direct) p99 %.2f ms, syscalls/req r/w client %.2f/%.2f server %.2f/%.2f, errors %d", what, r.QPS, r.RatioQPS, r.P99ms, r.ReadsClient, r.WritesClient, r.ReadsServer, r.WritesServer, r.Errors)
			out = append(out, r)
		}
	}
	return out
}

// sizeName is a response size as the tables write it: 100 B, 1 KiB, 1 MiB.
func sizeName(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

// scalingTable writes the curve: a row per point, per setup its
// throughput (and its ratio to direct's) and p99.
func scalingTable(b *strings.Builder, rep *report) {
	var names []string
	for _, r := range rep.Results {
		if r.Scenario == "scaling" && !slices.Contains(names, r.Setup) {
			names = append(names, r.Setup)
		}
	}
	if len(names) == 0 {
		return
	}
	b.WriteString("\n### Scaling curve (closed loop at saturation; fortio, HTTP/1.1 keep-alive)\n\nThroughput in requests/s (in brackets: of direct at the same point) and p99 in ms; then read and write system calls per request of each proxy (client side; server side), and the errors of the row's runs.\n\n| connections | response |")
	for _, n := range names {
		fmt.Fprintf(b, " %s rps | %s p99 |", n, n)
	}
	for _, n := range names[1:] {
		fmt.Fprintf(b, " %s syscalls r/w |", n)
	}
	b.WriteString(" errors |\n|---|---|" + strings.Repeat("---|---|", len(names)) + strings.Repeat("---|", len(names)) + "\n")
	for _, pt := range scalePoints {
		row := fmt.Sprintf("| %d | %s |", pt.conns, sizeName(pt.size))
		found := false
		var errs int64
		var calls []string
		for _, n := range names {
			r, ok := findScale(rep, pt, n)
			if !ok {
				row += " — | — |"
				calls = append(calls, "—")
				continue
			}
			found, errs = true, errs+r.Errors
			if r.RatioQPS > 0 {
				row += fmt.Sprintf(" %.0f (%.2f) | %s |", r.QPS, r.RatioQPS, f2(r.P99ms))
			} else {
				row += fmt.Sprintf(" %.0f | %s |", r.QPS, f2(r.P99ms))
			}
			calls = append(calls, syscallsCell(r))
		}
		if !found {
			continue
		}
		for _, c := range calls[1:] {
			row += " " + c + " |"
		}
		b.WriteString(row + fmt.Sprintf(" %d |\n", errs))
	}
}

func findScale(rep *report, pt scalePoint, setup string) (Result, bool) {
	for _, r := range rep.Results {
		if r.Scenario == "scaling" && r.Setup == setup && r.Conns == pt.conns && r.RespBytes == pt.size {
			return r, true
		}
	}
	return Result{}, false
}

// syscallsCell is a row's read/write system calls per request of each
// proxy: "client r/w; server r/w", or — where none was counted.
func syscallsCell(r Result) string {
	if r.ReadsClient == 0 && r.WritesClient == 0 && r.ReadsServer == 0 && r.WritesServer == 0 {
		return "—"
	}
	return fmt.Sprintf("%.1f/%.1f; %.1f/%.1f", r.ReadsClient, r.WritesClient, r.ReadsServer, r.WritesServer)
}
