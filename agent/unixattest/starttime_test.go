package unixattest

import (
	"os"
	"os/exec"
	"testing"
)

func TestParseStartTime(t *testing.T) {
	line := "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10"
	got, err := parseStartTime([]byte(line))
	if err != nil || got != 987654 {
		t.Fatalf("parseStartTime = %d, %v; want 987654", got, err)
	}
	for _, bad := range []string{"", "12 (x) S 1 2", "12 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 x"} {
		if _, err := parseStartTime([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// TestSameProcessAfterPidReuse: a connection's pid that names a process
// started at another time than the one that connected is refused, as is
// one whose process has exited or whose start time was never read.
func TestSameProcessAfterPidReuse(t *testing.T) {
	self := int32(os.Getpid())
	start, err := startTime("/proc", self)
	if err != nil {
		t.Fatal(err)
	}
	if err := SameProcess(AuthInfo{PID: self, StartTime: start}); err != nil {
		t.Fatalf("the connecting process itself: %v", err)
	}
	if err := SameProcess(AuthInfo{PID: self, StartTime: start + 1}); err != ErrProcessGone {
		t.Fatalf("another start time: %v, want ErrProcessGone", err)
	}
	if err := SameProcess(AuthInfo{PID: self}); err != ErrProcessGone {
		t.Fatalf("unread start time: %v, want ErrProcessGone", err)
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if err := SameProcess(AuthInfo{PID: int32(cmd.Process.Pid), StartTime: start}); err != ErrProcessGone {
		t.Fatalf("an exited process: %v, want ErrProcessGone", err)
	}
}
