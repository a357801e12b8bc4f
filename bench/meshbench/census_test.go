package main

import (
	"strings"
	"testing"
)

const straceSample = `strace: Process 4242 attached with 3 threads
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 41.10    0.102345          10     10000      2000 read
 30.00    0.070000          14      5000           write
 20.00    0.050000          10      4900           epoll_pwait
  5.00    0.010000           5      2000       100 recvfrom
  3.90    0.009000           4      2000           sendto
------ ----------- ----------- --------- --------- ----------------
100.00    0.241345          10     23900      2100 total
`

func TestParseStraceSummary(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    map[string]syscallCount
		wantErr string
	}{
		{"sample", straceSample, map[string]syscallCount{"read": {10000, 2000}, "write": {5000, 0}, "epoll_pwait": {4900, 0}, "recvfrom": {2000, 100}, "sendto": {2000, 0}}, ""},
		{"empty table", "% time     seconds  usecs/call     calls    errors syscall\n------ -----\n------ -----\n100.00 0.000000 0 0 total\n", map[string]syscallCount{}, ""},
		{"no table", "strace: attach: ptrace(PTRACE_SEIZE, 1): Operation not permitted\n", nil, "no table"},
		{"bad calls", "% time seconds usecs/call calls errors syscall\n 1.0 0.1 1 many read\n", nil, "bad calls"},
		{"errors above calls", "% time seconds usecs/call calls errors syscall\n 1.0 0.1 1 5 6 read\n", nil, "bad errors"},
		{"short line", "% time seconds usecs/call calls errors syscall\n 1.0 read\n", nil, "unexpected line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStraceSummary(strings.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s: got %+v, want %+v", k, got[k], v)
				}
			}
		})
	}
}

func TestPerRequestKinds(t *testing.T) {
	counts, err := parseStraceSummary(strings.NewReader(straceSample))
	if err != nil {
		t.Fatal(err)
	}
	got := perRequest(counts, 1000)
	want := censusSide{Reads: 12, FailedReads: 2.1, Writes: 7, Waits: 4.9, All: 23.9}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if (perRequest(counts, 0) != censusSide{}) {
		t.Fatal("no requests: want zero figures")
	}
}
