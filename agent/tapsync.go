package agent

import (
	"context"
	"errors"
	"io"
	"time"
)

// tapLoop follows the server's Tap stream (`sigil tap`): controls down to
// the relay, which passes them to the node's sidecars, and what the
// sidecars sampled back up as it comes. It reconnects on the backoff
// schedule; while it is down, the node's taps lapse on their own.
func (a *agent) tapLoop(ctx context.Context) {
	expire := time.NewTicker(time.Second)
	defer expire.Stop()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-expire.C:
				a.relay.ExpireTaps()
			}
		}
	}()
	a.follow(ctx, a.tapOnce, func(err error) { a.log.Debug("tap stream ended; reconnecting", "error", err) })
}

// tapOnce runs one Tap stream; it reports whether the server sent
// anything on it.
func (a *agent) tapOnce(ctx context.Context) (bool, error) {
	api, err := a.client.api()
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := api.Tap(ctx, syncCallOptions...)
	if err != nil {
		return false, err
	}
	sendErr := make(chan error, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case up := <-a.relay.TapUp():
				if err := stream.Send(up); err != nil {
					sendErr <- err
					cancel()
					return
				}
			}
		}
	}()
	got := false
	for {
		c, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return got, errors.New("agent: server closed the tap stream")
		}
		if err != nil {
			select {
			case e := <-sendErr:
				return got, e
			default:
			}
			return got, err
		}
		got = true
		if err := a.relay.TapControl(c); err != nil {
			a.log.Warn("tap refused", "tap_id", c.GetTapId(), "error", err)
		}
	}
}
