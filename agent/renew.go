package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sigil-mesh/sigil/agent/svid"
	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/internal/backoff"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// renewLoop keeps the agent's own SVID valid. It renews at half-life and
// retries on the backoff schedule while the server is away; a failed
// renewal means the server has been out of reach for half the SVID's life
// at least, so it is warned about (renewal_failing) before the SVID
// expires. Once the SVID has expired, or the server refuses this
// agent, nothing can be renewed with it: the loop re-attests with the next
// join token not tried before (re-read from --join-token-file), without a
// restart, as SPIRE's agent re-attests in process.
func (a *agent) renewLoop(ctx context.Context) {
	var b backoff.Backoff
	failing := false
	for {
		leaf := a.svid.Load().Certificates[0]
		if !failing && !a.evicted.Load() {
			t := time.NewTimer(time.Until(leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)))
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-a.renewWake:
			case <-t.C:
			}
			t.Stop()
		}
		if ctx.Err() != nil {
			return
		}
		if a.evicted.Load() || !time.Now().Before(leaf.NotAfter) {
			if a.reattest(ctx) {
				b.Reset()
				failing = false
				continue
			}
			failing = true
			if !b.Wait(ctx, a.renewWake) {
				return
			}
			continue
		}
		callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		own, err := a.client.renew(callCtx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if status.Code(err) == codes.PermissionDenied {
			a.markEvicted(err)
			continue
		}
		if err != nil {
			failing = true
			a.log.Warn("agent svid renewal failed; retrying", "error", err, "not_after", leaf.NotAfter)
			a.health.set(StateRenewalFailing, fmt.Sprintf("agent svid expires in %s and cannot be renewed: %v", time.Until(leaf.NotAfter).Round(time.Second), err))
			if !b.Wait(ctx, a.renewWake) {
				return
			}
			continue
		}
		b.Reset()
		failing = false
		if err := a.adopt(own); err != nil {
			a.log.Error("agent svid not saved", "error", err)
		}
		a.health.set(StateOK, "")
		a.log.Info("agent svid renewed", "not_after", own.Certificates[0].NotAfter)
	}
}

// markEvicted records that the server refused this agent, and wakes the
// renewal loop to re-attest.
func (a *agent) markEvicted(err error) {
	if !a.evicted.Swap(true) {
		a.log.Error("the server refused this agent (evicted?); serving no identities until it attests again with "+a.attestsWith(), "attestor", a.attestor(), "error", err)
	}
	poke(a.renewWake)
}

// reattest tries once to attest the node again with a join token not
// tried before. Until it succeeds the cache is blocked (workloads are told
// why at once) and the state says expired or evicted. It reports success.
func (a *agent) reattest(ctx context.Context) bool {
	state := StateExpired
	reason := "agent svid expired at " + a.svidNotAfter().UTC().Format(time.RFC3339) + " (the server was unreachable while it could have been renewed)"
	if a.evicted.Load() {
		state, reason = StateEvicted, "the server refused this agent (evicted)"
	}
	a.cache.SetBlocked(errors.New(reason + "; the node must re-attest with " + a.attestsWith()))
	token, err := a.tokens.Next()
	switch {
	case errors.Is(err, svid.ErrNoToken) && a.tokens.Where() == "":
		a.health.set(state, reason+"; no --join-token-file to take a new join token from, so only a restart with a new token brings the node back")
		return false
	case errors.Is(err, svid.ErrNoToken):
		a.health.set(state, reason+"; waiting for a new join token in "+a.tokens.Where())
		return false
	case err != nil:
		a.health.set(state, reason+"; "+err.Error())
		return false
	}
	a.health.set(state, reason+"; re-attesting with "+a.attestsWith())
	callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	own, bundle, err := a.client.attest(callCtx, token)
	cancel()
	if err != nil {
		switch status.Code(err) {
		case codes.PermissionDenied, codes.InvalidArgument:
			// A refused join token is never sent again (single use); a
			// projected token is sent again on the backoff.
			a.tokens.Spent(token)
			a.health.reattestations.WithLabelValues("refused").Inc()
			if a.cfg.Kubernetes.Enabled {
				a.log.Error("re-attestation refused; retrying with the projected token on the backoff (see the server's log for the reason)", "attestor", a.attestor(), "file", a.tokens.Where(), "error", err)
			} else {
				a.log.Error("re-attestation refused; write a new join token", "attestor", a.attestor(), "file", a.tokens.Where(), "error", err)
			}
		default:
			a.health.reattestations.WithLabelValues("failed").Inc()
			a.log.Warn("re-attestation failed; retrying", "error", err)
		}
		return false
	}
	a.tokens.Spent(token)
	if err := a.cfg.Kubernetes.checkOwnID(own.ID); err != nil {
		a.health.reattestations.WithLabelValues("refused").Inc()
		a.log.Error("re-attestation refused", "attestor", a.attestor(), "error", err)
		return false
	}
	return a.adoptReattested(own, bundle)
}

// adoptReattested takes the SVID and bundle of a re-attestation and lifts
// the block: the cache re-signs what has expired, the sync stream
// reconnects at once.
func (a *agent) adoptReattested(own *x509svid.SVID, bundle *agentv1.Bundle) bool {
	prev := a.svid.Load().ID
	if err := a.adopt(own); err != nil {
		a.log.Error("agent svid not saved", "error", err)
	}
	if err := a.applyBundle(bundle); err != nil {
		a.log.Error("bundle from server refused", "error", err)
	}
	if own.ID != prev {
		a.log.Warn("re-attested under another agent ID: this node now gets the entries of the new one", "previous_agent_id", prev.String(), "agent_id", own.ID.String())
	}
	if a.evicted.Swap(false) {
		a.cache.Unsynced() // the eviction dropped the entries; the next sync brings them
	}
	a.cache.SetBlocked(nil)
	a.health.reattestations.WithLabelValues("ok").Inc()
	a.health.set(StateOK, "")
	a.log.Info("node re-attested", "agent_id", own.ID.String(), "not_after", own.Certificates[0].NotAfter)
	poke(a.reattested)
	return true
}

// attestsWith says what the node re-attests with, for the operator.
func (a *agent) attestsWith() string {
	if a.cfg.Kubernetes.Enabled {
		return "its projected service-account token, re-read from --k8s-psat-token-file (kubelet refreshes it)"
	}
	return "a join token not tried before, from --join-token-file"
}

// attestor is the node attestor the agent uses (naming's names).
func (a *agent) attestor() string {
	if a.cfg.Kubernetes.Enabled {
		return naming.AttestorK8sPSAT
	}
	return "join_token"
}
