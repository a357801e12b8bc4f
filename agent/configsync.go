package agent

import (
	"context"
	"errors"
	"io"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/api/configdelta"
	"github.com/sigil-mesh/sigil/internal/backoff"
	"google.golang.org/grpc"
)

// maxSyncMessage bounds one Sync message (a node's entries and the
// bundle). Configuration no longer rides on it, but a node with more
// than some 16,000 entries would pass gRPC's 4 MiB default and lose its
// identity stream; 64 MiB holds about 250,000.
const maxSyncMessage = 64 << 20

// The Sync stream waits for the channel rather than fail while it
// reconnects: it opens the moment the server is back (the channel retries
// on the backoff schedule), not at the sync loop's next turn.
var syncCallOptions = []grpc.CallOption{grpc.MaxCallRecvMsgSize(maxSyncMessage), grpc.WaitForReady(true)}

// configLoop follows the server's StreamConfig, apart from Sync: entries
// and bundles keep flowing whatever happens to configuration. It
// reconnects on the backoff schedule, like syncLoop.
func (a *agent) configLoop(ctx context.Context) {
	a.follow(ctx, a.configOnce, func(err error) {
		a.log.Warn("config stream ended; sidecars keep the last configuration; reconnecting", "error", err)
	})
}

// follow runs one stream after another (once) until ctx ends, waiting on
// the backoff schedule between them; a stream that delivered something
// resets the schedule. ended is told why each stream stopped.
func (a *agent) follow(ctx context.Context, once func(context.Context) (bool, error), ended func(error)) {
	var b backoff.Backoff
	for ctx.Err() == nil {
		got, err := once(ctx)
		if ctx.Err() != nil {
			return
		}
		if got {
			b.Reset()
		}
		ended(err)
		if !b.Wait(ctx, nil) {
			return
		}
	}
}

// configOnce runs one StreamConfig; it reports whether a complete
// configuration arrived. Deltas are assembled until one is complete, and
// only then handed to the relay, so sidecars never see half a change.
func (a *agent) configOnce(ctx context.Context) (bool, error) {
	api, err := a.client.api()
	if err != nil {
		return false, err
	}
	stream, err := api.StreamConfig(ctx, &agentv1.StreamConfigRequest{})
	if err != nil {
		return false, err
	}
	var deltas configdelta.Receiver
	got := false
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return got, errors.New("agent: server closed the config stream")
		}
		if err != nil {
			return got, err
		}
		snap, err := deltas.Apply(msg)
		if err != nil {
			return got, err
		}
		if snap == nil {
			continue
		}
		got = true
		a.relay.SetConfig(snap)
		a.log.Debug("config synced", "version", snap.Version, "resources", len(snap.Resources), "endpoints_revision", snap.EndpointsRevision)
	}
}
