//go:build linux

package loop

import (
	"fmt"
	"runtime/debug"
)

// guard calls f, code of the Handler's (one of its methods, named by
// what: "Retrier.Unreachable", say), and returns what f returns. An f
// that panics fails only what it was asked about, not the loop nor the
// process: the panic is logged with its stack, and guard returns T's
// zero value and an error naming what.
func guard[T any](l *Loop, what string, f func() T) (v T, err error) {
	defer func() {
		if p := recover(); p != nil {
			var zero T
			v, err = zero, fmt.Errorf("loop: %s panicked: %v", what, p)
			if l.cfg.Log != nil {
				l.cfg.Log.Error("loop: the handler's code panicked", "error", fmt.Sprintf("%v\n%s", err, debug.Stack()))
			}
		}
	}()
	return f(), nil
}

// upstreamKey is an Upstream and its Key, for guard.
type upstreamKey struct {
	up  Upstream
	key string
}

// withKey is u and its Key (keyOf).
func withKey(u Upstream) upstreamKey { return upstreamKey{u, keyOf(u)} }
