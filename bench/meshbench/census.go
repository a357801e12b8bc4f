package main

import (
	"bufio"
	"fmt"
	"io"
	"log"
	"os"
	"strconv"
	"strings"
	"time"
)

// The syscall census counts every system call of each proxy of a pair
// with strace -c while fortio sends censusRate requests/s: unlike
// /proc/<pid>/io, whose syscr and syscw count only read(2)- and
// write(2)-family calls (readv, pread, sendfile...), it sees recv(2),
// send(2), recvmsg(2) and sendmsg(2) too, which nginx uses on plain
// sockets and HAProxy everywhere, and the epoll waits between them.
// ptrace slows the traced process, so the census is a row of its own:
// its latency and CPU are not reported.
const censusRate = 1000

// syscallKinds sorts the calls strace reports into what the census
// table shows; anything else counts only in the total.
var syscallKinds = map[string]string{
	"read": "read", "readv": "read", "pread64": "read", "preadv": "read", "recvfrom": "read", "recvmsg": "read", "recvmmsg": "read",
	"write": "write", "writev": "write", "pwrite64": "write", "pwritev": "write", "sendto": "write", "sendmsg": "write", "sendmmsg": "write", "sendfile": "write", "splice": "write",
	"epoll_wait": "wait", "epoll_pwait": "wait", "epoll_pwait2": "wait", "poll": "wait", "ppoll": "wait", "select": "wait", "pselect6": "wait", "io_uring_enter": "wait",
}

// syscallCount is one line of strace -c's summary: calls and failed calls.
type syscallCount struct {
	Calls, Errors int64
}

// parseStraceSummary reads the table strace -c writes (-o file): a header,
// a dashed rule, one line per system call ("% time, seconds, usecs/call,
// calls, [errors], syscall"), another rule and a total line. It returns
// calls and errors by system call name, without the total.
func parseStraceSummary(r io.Reader) (map[string]syscallCount, error) {
	out := map[string]syscallCount{}
	sc := bufio.NewScanner(r)
	header := false
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 0, strings.HasPrefix(f[0], "---"):
			continue
		case f[0] == "%":
			header = true
			continue
		case !header:
			continue // strace's own messages before the table
		}
		if len(f) < 5 || len(f) > 6 {
			return nil, fmt.Errorf("strace summary: unexpected line %q", sc.Text())
		}
		name := f[len(f)-1]
		if name == "total" {
			continue
		}
		calls, err := strconv.ParseInt(f[3], 10, 64)
		if err != nil || calls < 0 {
			return nil, fmt.Errorf("strace summary: %s: bad calls %q", name, f[3])
		}
		var errs int64
		if len(f) == 6 {
			if errs, err = strconv.ParseInt(f[4], 10, 64); err != nil || errs < 0 || errs > calls {
				return nil, fmt.Errorf("strace summary: %s: bad errors %q", name, f[4])
			}
		}
		out[name] = syscallCount{calls, errs}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("strace summary: %w", err)
	}
	if !header {
		return nil, fmt.Errorf("strace summary: no table")
	}
	return out, nil
}

// censusSide is one proxy's system calls per request, by kind.
type censusSide struct {
	Reads       float64 `json:"reads"`        // read, recvfrom, recvmsg...
	FailedReads float64 `json:"failed_reads"` // of which failed (EAGAIN: nothing to read yet)
	Writes      float64 `json:"writes"`       // write, writev, sendto, sendmsg...
	Waits       float64 `json:"waits"`        // epoll_wait, epoll_pwait, poll...
	All         float64 `json:"all"`          // every system call
}

// perRequest folds strace's counts into kinds, per request.
func perRequest(counts map[string]syscallCount, requests int64) censusSide {
	var c censusSide
	if requests <= 0 {
		return c
	}
	n := float64(requests)
	for name, v := range counts {
		switch syscallKinds[name] {
		case "read":
			c.Reads += float64(v.Calls) / n
			c.FailedReads += float64(v.Errors) / n
		case "write":
			c.Writes += float64(v.Calls) / n
		case "wait":
			c.Waits += float64(v.Calls) / n
		}
		c.All += float64(v.Calls) / n
	}
	return c
}

// census runs the syscall census of each pair for d: fortio at censusRate
// requests/s, 16 connections, 1 KiB, with strace -c -f attached to both
// proxies. Its rows are "syscall-census" results whose Census holds the
// client side's and the server side's figures.
func (e *env) census(setups []*setup, d time.Duration, fail func(string, error)) []Result {
	var out []Result
	for _, s := range setups {
		if s.client == nil || s.server == nil {
			continue
		}
		r, err := e.censusOf(s, d)
		if err != nil {
			fail("syscall-census/"+s.name, err)
			continue
		}
		c := r.Census
		log.Printf("syscall census %-10s per request: client reads %.2f (failed %.2f) writes %.2f waits %.2f all %.2f; server reads %.2f (failed %.2f) writes %.2f waits %.2f all %.2f",
			s.name, c[0].Reads, c[0].FailedReads, c[0].Writes, c[0].Waits, c[0].All, c[1].Reads, c[1].FailedReads, c[1].Writes, c[1].Waits, c[1].All)
		out = append(out, r)
	}
	return out
}

func (e *env) censusOf(s *setup, d time.Duration) (Result, error) {
	var tracers [2]*proc
	files := [2]string{}
	defer func() {
		for _, t := range tracers {
			if t != nil {
				t.stop()
			}
		}
	}()
	for i, p := range [2]*proc{s.client, s.server} {
		files[i] = fmt.Sprintf("%s/strace-%s-%d.txt", e.dir, s.name, i)
		t, err := startProc(e.dir, fmt.Sprintf("strace-%s-%d", s.name, i), "strace", "-f", "-c", "-o", files[i], "-p", strconv.Itoa(p.pid()))
		if err != nil {
			return Result{}, err
		}
		tracers[i] = t
		if _, err := t.waitLog("attached", 10*time.Second); err != nil {
			return Result{}, err
		}
	}
	r, err := e.fortio(&setup{name: s.name, target: s.target, host: s.host}, "-qps", strconv.Itoa(censusRate), "-c", "16", "-t", d.String())
	if err != nil {
		return Result{}, err
	}
	r.Scenario = "syscall-census"
	r.Census = make([]censusSide, 2)
	for i, t := range tracers {
		t.stop() // strace detaches on SIGTERM and writes its table
		tracers[i] = nil
		f, err := os.Open(files[i])
		if err != nil {
			return Result{}, err
		}
		counts, err := parseStraceSummary(f)
		f.Close()
		if err != nil {
			return Result{}, err
		}
		r.Census[i] = perRequest(counts, r.Requests)
	}
	return r, nil
}

// censusTable writes the census rows.
func censusTable(b *strings.Builder, rep *report) {
	first := true
	for _, r := range rep.Results {
		if r.Scenario != "syscall-census" || len(r.Census) != 2 {
			continue
		}
		if first {
			fmt.Fprintf(b, "\n### System calls per request, all kinds (strace -c -f on each proxy, %d rps, 16 connections, 1 KiB)\n\n", censusRate)
			b.WriteString("`reads` are read, readv, recvfrom, recvmsg...; `failed` those of them that returned an error (EAGAIN: the socket was empty); `waits` are epoll_wait and the like; `all` is every system call. strace slows the proxies: this row gives counts only.\n\n")
			b.WriteString("| setup | side | reads | failed reads | writes | waits | all |\n|---|---|---|---|---|---|---|\n")
			first = false
		}
		for i, side := range []string{"client", "server"} {
			c := r.Census[i]
			fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s |\n", r.Setup, side, f2(c.Reads), f2(c.FailedReads), f2(c.Writes), f2(c.Waits), f2(c.All))
		}
	}
}
