package main

import (
	"fmt"
	"os"
	"strings"
)

func find(rep *report, scenario, setup string) (Result, bool) {
	for _, r := range rep.Results {
		if r.Scenario == scenario && r.Setup == setup {
			return r, true
		}
	}
	return Result{}, false
}

// targets checks the targets against this run.
func targets(rep *report) []target {
	var out []target
	s1000, ok1 := find(rep, "http1-keepalive-1000rps", "sigil")
	n1000, ok2 := find(rep, "http1-keepalive-1000rps", "nginx")
	if ok1 && ok2 {
		out = append(out, target{"added p99 at 1000 rps", fmt.Sprintf("≤ nginx pair's (%.2f ms); aim 20%% lower", n1000.AddedP99ms),
			fmt.Sprintf("%.2f ms", s1000.AddedP99ms), s1000.AddedP99ms <= n1000.AddedP99ms})
	}
	if ok1 && ok2 {
		out = append(out, target{"added p50 at 1000 rps", fmt.Sprintf("≤ nginx pair's (%.2f ms)", n1000.AddedP50ms),
			fmt.Sprintf("%.2f ms", s1000.AddedP50ms), s1000.AddedP50ms <= n1000.AddedP50ms})
		cpu, ncpu := max(s1000.CPUClientPer1k, s1000.CPUServerPer1k), max(n1000.CPUClientPer1k, n1000.CPUServerPer1k)
		out = append(out, target{"CPU per proxy per 1000 rps (with the OPA decision)", fmt.Sprintf("≤ nginx pair's (%.3f cores)", ncpu), fmt.Sprintf("%.3f cores (client %.3f, server %.3f)", cpu, s1000.CPUClientPer1k, s1000.CPUServerPer1k), cpu <= ncpu})
	}
	if ok1 {
		rss := max(s1000.RSSClientMB, s1000.RSSServerMB)
		out = append(out, target{"RSS per proxy at 1000 rps", "≤ 20 MB", fmt.Sprintf("%.1f MB", rss), rss <= 20})
	}
	if rep.Memory.IdleProxyMB > 0 {
		out = append(out, target{"RSS of an idle proxy", "≤ 15 MB", fmt.Sprintf("%.1f MB", rep.Memory.IdleProxyMB), rep.Memory.IdleProxyMB <= 15})
	}
	ss, ok1 := find(rep, "saturation-64conn", "sigil")
	ns, ok2 := find(rep, "saturation-64conn", "nginx")
	gs, ok3 := find(rep, "saturation-64conn", "ghostunnel")
	if ok1 && ok2 {
		goal := fmt.Sprintf("≥ nginx pair's (%.2f of direct)", ns.RatioQPS)
		if ok3 {
			goal += fmt.Sprintf("; aim ghostunnel's (%.2f)", gs.RatioQPS)
		}
		out = append(out, target{"saturation throughput", goal, fmt.Sprintf("%.2f of direct", ss.RatioQPS), ss.RatioQPS >= ns.RatioQPS})
	}
	if sg, ok := find(rep, "grpc-unary", "sigil"); ok {
		goal, met := "≥ 0.50 of direct", sg.RatioQPS >= 0.5
		if ng, ok := find(rep, "grpc-unary", "nginx"); ok {
			goal += fmt.Sprintf(" and ≥ nginx grpc_pass pair's (%.2f)", ng.RatioQPS)
			met = met && sg.RatioQPS >= ng.RatioQPS
		}
		out = append(out, target{"gRPC unary through the mesh", goal, fmt.Sprintf("%.2f of direct", sg.RatioQPS), met})
	}
	for _, p := range rep.Policy {
		if p.Rules == 100 {
			out = append(out, target{"policy decision, 100 rules, p50", "≤ 5 µs", fmt.Sprintf("%.1f µs", p.P50us), p.P50us <= 5})
		}
	}
	return out
}

func markdown(rep *report) string {
	var b strings.Builder
	m := rep.Machine
	fmt.Fprintf(&b, "Run of %s on %v × %v, %v, %v. Command: `%s`. Raw figures: `bench/results/%s`. Kernel TLS: %v.\n\n", rep.Date, m["cpus"], m["cpu"], m["go"], m["os"], rep.Command, resultsName(rep), m["ktls"])
	if rep.Scaling {
		scalingTable(&b, rep)
		failures(&b, rep)
		return b.String()
	}
	b.WriteString("### Latency added by a pair of proxies (HTTP/1.1 keep-alive, 1 KiB, 16 connections; fortio)\n\n")
	b.WriteString("| rate | setup | achieved rps | p50 ms | p90 ms | p99 ms | added p50 | added p90 | added p99 | CPU cores/1k rps (client, server) | RSS MB (client, server) | syscalls/req r/w (client; server) | errors |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rep.Results {
		if !strings.HasPrefix(r.Scenario, "http1-keepalive") {
			continue
		}
		rate := strings.TrimSuffix(strings.TrimPrefix(r.Scenario, "http1-keepalive-"), "rps")
		cpu, rss, added := "—", "—", [3]string{"—", "—", "—"}
		if r.Setup != "direct" {
			cpu = fmt.Sprintf("%.3f, %.3f", r.CPUClientPer1k, r.CPUServerPer1k)
			rss = fmt.Sprintf("%.1f, %.1f", r.RSSClientMB, r.RSSServerMB)
			added = [3]string{f2(r.AddedP50ms), f2(r.AddedP90ms), f2(r.AddedP99ms)}
		}
		fmt.Fprintf(&b, "| %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n", rate, r.Setup, r.QPS, f2(r.P50ms), f2(r.P90ms), f2(r.P99ms), added[0], added[1], added[2], cpu, rss, syscallsCell2(r), r.Errors)
	}
	b.WriteString("\n### Throughput at saturation (64 connections), new mTLS connections, gRPC\n\n" +
		"gRPC: grpc-go client, one HTTP/2 connection; unary is the health service's Check from 16 goroutines (calls/s), " +
		"streaming is meshbench.Echo/Stream, 4 bidirectional streams each keeping 16 messages of 1 KiB in flight (messages/s, " +
		"p50/p99 of a message's round trip). System calls are per request, per message for streaming.\n\n" +
		"| scenario | setup | rps | vs direct | p50 ms | p99 ms | syscalls/req r/w (client; server) | CPU cores/1k rps (client, server) | errors |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rep.Results {
		if strings.HasPrefix(r.Scenario, "http1-keepalive") || r.Scenario == "scaling" || r.Scenario == "syscall-census" {
			continue
		}
		ratio := "—"
		if r.RatioQPS > 0 {
			ratio = f2(r.RatioQPS)
		}
		cpu := "—"
		if r.CPUClientPer1k > 0 || r.CPUServerPer1k > 0 {
			cpu = fmt.Sprintf("%.3f, %.3f", r.CPUClientPer1k, r.CPUServerPer1k)
		}
		fmt.Fprintf(&b, "| %s | %s | %.0f | %s | %s | %s | %s | %s | %d |\n", r.Scenario, r.Setup, r.QPS, ratio, f2(r.P50ms), f2(r.P99ms), syscallsCell2(r), cpu, r.Errors)
	}
	censusTable(&b, rep)
	scalingTable(&b, rep)
	if rep.DataOnly {
		fmt.Fprintf(&b, "\nRSS of an idle sidecar: %.1f MB (anonymous %.1f, file-backed %.1f).\n", rep.Memory.IdleProxyMB, rep.Memory.IdleAnonMB, rep.Memory.IdleFileMB)
	} else {
		policyAndIdentity(&b, rep)
	}
	b.WriteString("\n### Targets\n\n| target | goal | this run | met |\n|---|---|---|---|\n")
	for _, t := range rep.Targets {
		met := "no"
		if t.Met {
			met = "yes"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", t.What, t.Goal, t.Actual, met)
	}
	failures(&b, rep)
	return b.String()
}

func failures(b *strings.Builder, rep *report) {
	if len(rep.Failures) > 0 {
		b.WriteString("\nScenarios that failed to run:\n\n")
		for _, f := range rep.Failures {
			fmt.Fprintf(b, "- %s\n", f)
		}
	}
}

// resultsName is the JSON report's file name: <date>.json, or
// <date>-scaling.json for a -scaling-only run and <date>-grpc.json for a
// -grpc-only one (which leave the README's table alone).
func resultsName(rep *report) string {
	if rep.Scaling {
		return rep.Date + "-scaling.json"
	}
	if rep.GRPCOnly {
		return rep.Date + "-grpc.json"
	}
	return rep.Date + ".json"
}

// syscallsCell2 is syscallsCell with two decimals (the main tables).
func syscallsCell2(r Result) string {
	if r.ReadsClient == 0 && r.WritesClient == 0 && r.ReadsServer == 0 && r.WritesServer == 0 {
		return "—"
	}
	side := func(reads, writes float64) string {
		if reads == 0 && writes == 0 {
			return "—" // no such proxy in this row, or none counted
		}
		return fmt.Sprintf("%.2f/%.2f", reads, writes)
	}
	return side(r.ReadsClient, r.WritesClient) + "; " + side(r.ReadsServer, r.WritesServer)
}

// policyAndIdentity writes the policy, identity and memory tables.
func policyAndIdentity(b *strings.Builder, rep *report) {
	b.WriteString("\n### Policy decision (prepared query, input built as the sidecar builds it)\n\n| rules | ns/op | allocs/op | B/op | p50 µs | p99 µs |\n|---|---|---|---|---|---|\n")
	for _, p := range rep.Policy {
		fmt.Fprintf(b, "| %d | %.0f | %d | %d | %.1f | %.1f |\n", p.Rules, p.NsPerOp, p.AllocsPerOp, p.BytesPerOp, p.P50us, p.P99us)
	}
	id := rep.Identity
	fmt.Fprintf(b, "\n### Identity and memory\n\n| figure | value |\n|---|---|\n| renewal storm: %d workloads on %d agents, all at once | %.2f s wall, %.0f SVIDs/s, server %.2f CPU s (%.2f cores) |\n", id.Workloads, id.Agents, id.WallSeconds, id.SVIDsPerSec, id.ServerCPUSecs, id.ServerCores)
	fmt.Fprintf(b, "| RSS of an idle sidecar | %.1f MB (anonymous %.1f, file-backed %.1f) |\n| RSS of the agent, idle / holding %d workloads' SVIDs | %.1f MB / %.1f MB |\n", rep.Memory.IdleProxyMB, rep.Memory.IdleAnonMB, rep.Memory.IdleFileMB, rep.Memory.AgentEntries, rep.Memory.AgentIdleMB, rep.Memory.AgentMB)
}

func printTable(rep *report) { fmt.Fprintln(os.Stdout, markdown(rep)) }
