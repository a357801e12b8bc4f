package listener

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

func TestTemporaryAcceptErrors(t *testing.T) {
	wrap := func(e error) error {
		return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", e)}
	}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{wrap(syscall.EMFILE), true},
		{wrap(syscall.ENFILE), true},
		{wrap(syscall.ENOBUFS), true},
		{wrap(syscall.ENOMEM), true},
		{wrap(syscall.ECONNABORTED), true},
		{fmt.Errorf("x: %w", wrap(syscall.EPROTO)), true},
		{wrap(syscall.EBADF), false},
		{wrap(syscall.EINVAL), false},
		{net.ErrClosed, false},
		{&net.OpError{Op: "accept", Err: net.ErrClosed}, false},
		{errors.New("something else"), false},
		{nil, false},
	} {
		if got := Temporary(tc.err); got != tc.want {
			t.Errorf("Temporary(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// scripted returns its errors in order, then a connection, then ErrClosed.
type scripted struct {
	net.Listener
	errs []error
	conn net.Conn
}

func (s *scripted) Accept() (net.Conn, error) {
	if len(s.errs) > 0 {
		err := s.errs[0]
		s.errs = s.errs[1:]
		return nil, err
	}
	if s.conn != nil {
		c := s.conn
		s.conn = nil
		return c, nil
	}
	return nil, net.ErrClosed
}

func TestAcceptRetriesTemporaryErrorsWithBackoff(t *testing.T) {
	emfile := &net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	var waits []time.Duration
	errs := make([]error, 10)
	for i := range errs {
		errs[i] = emfile
	}
	ln := &retrying{Listener: &scripted{errs: errs, conn: a}, name: "test", log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		sleep: func(d time.Duration) { waits = append(waits, d) }}
	c, err := ln.Accept()
	if err != nil || c != a {
		t.Fatalf("Accept after temporary errors = %v, %v; want the connection", c, err)
	}
	want := []time.Duration{5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000}
	for i := range want {
		want[i] *= time.Millisecond
	}
	if fmt.Sprint(waits) != fmt.Sprint(want) {
		t.Errorf("backoff %v, want %v", waits, want)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept on a closed listener = %v, want net.ErrClosed", err)
	}
	bad := &retrying{Listener: &scripted{errs: []error{syscall.EBADF}}, log: ln.log, sleep: func(time.Duration) { t.Error("slept on a permanent error") }}
	if _, err := bad.Accept(); !errors.Is(err, syscall.EBADF) {
		t.Errorf("Accept with a permanent error = %v, want EBADF", err)
	}
}
