//go:build !linux

package loop

import (
	"context"
	"errors"
)

// Loop needs epoll: on other systems New fails and the sidecar keeps
// its goroutine path.
type Loop struct{}

// ErrNoEpoll is New's error where there is no epoll.
var ErrNoEpoll = errors.New("loop: needs Linux (epoll)")

// New fails: there is no epoll.
func New(Config) (*Loop, error) { return nil, ErrNoEpoll }

// Take closes c: there is no loop.
func (*Loop) Take(c *Conn, _ any) error {
	c.raw.Close()
	return ErrNoEpoll
}

// Conns is 0: there is no loop.
func (*Loop) Conns() int { return 0 }

// Shutdown does nothing.
func (*Loop) Shutdown(context.Context) error { return nil }

// Close does nothing.
func (*Loop) Close() error { return nil }

// CloseIdle does nothing: there is no pool.
func (*Loop) CloseIdle() {}
