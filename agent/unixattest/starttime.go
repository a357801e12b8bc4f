package unixattest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
)

// A caller is known by its pid, which SO_PEERCRED reports once, at the
// handshake; every later call on the connection is attested again from
// /proc/<pid>. Should the caller exit while a child keeps the connection
// open, the pid can be given to another process (on Kubernetes, with the
// agent in the host's pid namespace, one of another pod) whose cgroup,
// binary and uid the next attestation would read. So the handshake also
// records the process's start time, and SameProcess refuses an attestation
// once the pid names a process started at another time (SPIRE's
// peertracker guards the same race).

// startTime is field 22 of /proc/<pid>/stat, the process's start time in
// clock ticks after boot (proc(5)): a pid and its start time name one
// process for the life of the system.
func startTime(procRoot string, pid int32) (uint64, error) {
	data, err := os.ReadFile(procRoot + "/" + strconv.Itoa(int(pid)) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("unixattest: start time of pid %d: %w", pid, err)
	}
	return parseStartTime(data)
}

// parseStartTime reads field 22 of a /proc/<pid>/stat line. The second
// field, the command in parentheses, may hold spaces and parentheses, so
// fields are counted after its last ')'.
func parseStartTime(stat []byte) (uint64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("unixattest: /proc stat without a command field")
	}
	fields := bytes.Fields(stat[i+1:])
	// fields[0] is field 3 (state); field 22 is fields[19].
	if len(fields) < 20 {
		return 0, fmt.Errorf("unixattest: /proc stat has %d fields after the command, want at least 20", len(fields))
	}
	v, err := strconv.ParseUint(string(fields[19]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("unixattest: /proc stat start time %q: %w", fields[19], err)
	}
	return v, nil
}

// ErrProcessGone means the caller's pid no longer names the process that
// connected: it exited, and the pid may be another process's now.
var ErrProcessGone = errors.New("unixattest: the process that connected has exited; its pid may name another process now")

// SameProcess reports, as nil, that info's pid still names the process
// that made the connection (same start time, read from /proc, the pid
// namespace SO_PEERCRED reported the pid in); else ErrProcessGone. Call it
// after reading a process's properties, so none of them can be another
// process's.
func SameProcess(info AuthInfo) error {
	if info.StartTime == 0 {
		return ErrProcessGone
	}
	now, err := startTime("/proc", info.PID)
	if err != nil || now != info.StartTime {
		return ErrProcessGone
	}
	return nil
}
