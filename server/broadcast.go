package server

import "sync"

// broadcaster wakes every waiter when something changed. Waiters take the
// channel, read the state, then block on the channel: a change between the
// two closes the channel they hold, so none is missed.
type broadcaster struct {
	mu sync.Mutex
	ch chan struct{}
}

func newBroadcaster() *broadcaster { return &broadcaster{ch: make(chan struct{})} }

// Changed returns a channel closed at the next Notify.
func (b *broadcaster) Changed() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ch
}

// Notify wakes all current waiters.
func (b *broadcaster) Notify() {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.ch)
	b.ch = make(chan struct{})
}
