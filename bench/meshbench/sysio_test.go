package main

import (
	"os"
	"strings"
	"testing"
)

func TestParseProcIO(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    ioCounts
		wantErr string
	}{
		{"linux 6", "rchar: 12345\nwchar: 678\nsyscr: 391\nsyscw: 200\nread_bytes: 0\nwrite_bytes: 4096\ncancelled_write_bytes: 0\n", ioCounts{391, 200}, ""},
		{"no trailing newline", "syscw: 2\nsyscr: 1", ioCounts{1, 2}, ""},
		{"large counts", "syscr: 9223372036854775807\nsyscw: 0\n", ioCounts{9223372036854775807, 0}, ""},
		{"syscw missing", "rchar: 1\nsyscr: 5\n", ioCounts{}, "missing"},
		{"empty", "", ioCounts{}, "missing"},
		{"not a number", "syscr: many\nsyscw: 1\n", ioCounts{}, "bad count"},
		{"negative", "syscr: -1\nsyscw: 1\n", ioCounts{}, "bad count"},
		{"overflow", "syscr: 99999999999999999999\nsyscw: 1\n", ioCounts{}, "bad count"},
		{"twice", "syscr: 1\nsyscr: 2\nsyscw: 1\n", ioCounts{}, "twice"},
		{"prefix only", "syscrx: 1\nsyscr: 3\nsyscw: 4\n", ioCounts{3, 4}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcIO(strings.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// TestReadProcIOSelf reads this process's own counters: a write in
// between moves syscw.
func TestReadProcIOSelf(t *testing.T) {
	before, err := readProcIO(os.Getpid())
	if err != nil {
		t.Skipf("no /proc/self/io here: %v", err)
	}
	f, err := os.CreateTemp(t.TempDir(), "io")
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		f.Write([]byte("x"))
	}
	f.Close()
	after, err := readProcIO(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after.Writes-before.Writes < 10 {
		t.Fatalf("syscw moved by %d after 10 writes", after.Writes-before.Writes)
	}
}
