package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"
)

// ioCounts is a process's system-call counters from /proc/<pid>/io:
// syscr counts read-like calls (read, readv, recvfrom, recvmsg, ...),
// syscw write-like ones (write, writev, sendto, sendmsg, ...), summed
// over all the process's threads (proc(5)).
type ioCounts struct {
	Reads, Writes int64
}

// parseProcIO reads the syscr and syscw lines of a /proc/<pid>/io file.
// Both must be present, each once, as a non-negative decimal; other lines
// are ignored.
func parseProcIO(r io.Reader) (ioCounts, error) {
	var c ioCounts
	var seenR, seenW bool
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		name, value, ok := bytes.Cut(sc.Bytes(), []byte(":"))
		if !ok {
			continue
		}
		var dst *int64
		var seen *bool
		switch string(name) {
		case "syscr":
			dst, seen = &c.Reads, &seenR
		case "syscw":
			dst, seen = &c.Writes, &seenW
		default:
			continue
		}
		if *seen {
			return ioCounts{}, fmt.Errorf("proc io: %s given twice", name)
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(value)), 10, 64)
		if err != nil || n < 0 {
			return ioCounts{}, fmt.Errorf("proc io: %s: bad count %q", name, bytes.TrimSpace(value))
		}
		*dst, *seen = n, true
	}
	if err := sc.Err(); err != nil {
		return ioCounts{}, fmt.Errorf("proc io: %w", err)
	}
	if !seenR || !seenW {
		return ioCounts{}, fmt.Errorf("proc io: syscr or syscw missing")
	}
	return c, nil
}

// readProcIO reads /proc/<pid>/io (readable by the process's owner).
func readProcIO(pid int) (ioCounts, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/io")
	if err != nil {
		return ioCounts{}, err
	}
	defer f.Close()
	return parseProcIO(f)
}

// procSample is what a row measures of each proxy of a pair: CPU ticks
// and system calls, taken before and after the load.
type procSample struct {
	procs [2]*proc // client side, server side; nil where there is none
	ticks [2]int64
	io    [2]ioCounts
	start time.Time
}

func sampleProcs(client, server *proc) *procSample {
	s := &procSample{procs: [2]*proc{client, server}, start: time.Now()}
	for i, p := range s.procs {
		if p != nil {
			s.ticks[i] = cpuTicks(p.pid())
			s.io[i], _ = readProcIO(p.pid())
		}
	}
	return s
}

// finish fills r's per-proxy figures: CPU cores per 1000 requests/s, RSS,
// and read and write system calls per request (r.Requests requests, or
// messages for a stream, in r.QPS per second).
func (s *procSample) finish(r *Result) {
	elapsed := time.Since(s.start).Seconds()
	for i, p := range s.procs {
		if p == nil {
			continue
		}
		cores := float64(cpuTicks(p.pid())-s.ticks[i]) / 100 / elapsed
		var per1k float64
		if r.QPS > 0 {
			per1k = cores / (r.QPS / 1000)
		}
		var reads, writes float64
		if after, err := readProcIO(p.pid()); err == nil && r.Requests > 0 {
			reads = float64(after.Reads-s.io[i].Reads) / float64(r.Requests)
			writes = float64(after.Writes-s.io[i].Writes) / float64(r.Requests)
		}
		if i == 0 {
			r.CPUClientPer1k, r.RSSClientMB = per1k, rssMB(p.pid())
			r.ReadsClient, r.WritesClient = reads, writes
		} else {
			r.CPUServerPer1k, r.RSSServerMB = per1k, rssMB(p.pid())
			r.ReadsServer, r.WritesServer = reads, writes
		}
	}
}
