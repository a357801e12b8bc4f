package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/sigil-mesh/sigil/audit"
	"github.com/sigil-mesh/sigil/server/registry"
)

// audited records events as intents, runs the store write they describe,
// then records its outcome (see package audit). A failure to write the
// intent means the write is not tried. A failure to write the outcome is
// logged and left to reconcileAudit at the next start: the store answered,
// so the action's result stands.
func (s *Server) audited(_ context.Context, events []audit.Event, write func() error) error {
	in, err := s.audit.Begin(events...)
	if err != nil {
		return err
	}
	werr := write()
	if serr := in.Settle(werr); serr != nil {
		s.log.Error("audited action's outcome not recorded; it is reconciled at the next start", "event", events[0].Type, "error", serr)
	}
	return werr
}

// reconcileReason is the reason on records written by reconcileAudit.
const reconcileReason = "reconciled at start-up: "

// reconcileAudit settles the intents a stopped server left unsettled: for
// each it asks the store whether the action took effect, and records
// action.committed or action.aborted. It runs before the server serves.
func (s *Server) reconcileAudit(ctx context.Context) error {
	for _, e := range s.audit.Pending() {
		done, how, err := s.tookEffect(ctx, e)
		if err != nil {
			return fmt.Errorf("server: reconciling audit record %d (%s): %w", e.Seq, e.Type, err)
		}
		if err := s.audit.Settle(e.Seq, e.Seq, done, reconcileReason+how); err != nil {
			return err
		}
		s.log.Warn("audit intent reconciled", "seq", e.Seq, "event", e.Type, "committed", done, "reason", how)
	}
	return nil
}

// tookEffect says whether the store holds the change an intent describes.
func (s *Server) tookEffect(ctx context.Context, e audit.Event) (bool, string, error) {
	exists := func(err error) (bool, error) {
		if errors.Is(err, registry.ErrNotFound) {
			return false, nil
		}
		return err == nil, err
	}
	var found bool
	var err error
	switch e.Type {
	case audit.EntryCreated, audit.EntryDeleted:
		_, gerr := s.store.GetEntry(ctx, e.Details["entry_id"])
		found, err = exists(gerr)
		if e.Type == audit.EntryDeleted {
			found = !found
		}
	case audit.AgentEvicted:
		_, gerr := s.store.GetAgent(ctx, e.Subject)
		found, err = exists(gerr)
		found = !found
	case auditAgentBanned, auditAgentUnbanned: // adminapi_agents.go
		found, err = s.banHolds(ctx, e)
	case audit.AgentAttested, audit.AgentRenewed:
		a, gerr := s.store.GetAgent(ctx, e.Subject)
		found, err = exists(gerr)
		found = found && a.Serial == e.Details["serial"]
	case audit.TokenCreated:
		found, err = s.store.JoinTokenExists(ctx, e.Details["token_sha256"])
	case auditConfigApplied, auditConfigDeleted:
		var x *configIndex
		var unlock func()
		if x, unlock, err = s.lockConfig(ctx); err != nil {
			break
		}
		it, ok := x.items[strings.Replace(e.Subject, " ", "/", 1)]
		unlock()
		found = ok && specDigest(it.stored.Spec) == e.Details["spec_sha256"]
		if e.Type == auditConfigDeleted {
			found = !ok
		}
	case audit.CAPrepared, audit.CAActivated, audit.CARootCreated, audit.JWTKeyPrepared, audit.JWTKeyActivated:
		found, err = s.caStateHolds(ctx, e)
	default:
		return false, "no store change is known for " + e.Type + "; not found in the store", nil
	}
	if err != nil {
		return false, "", err
	}
	if found {
		return true, "the change is in the store", nil
	}
	return false, "the server stopped before the store took the change", nil
}

// caStateHolds says whether the CA's saved state (saved whole, once per
// rotation) holds the authority a CA event names: present for a
// preparation, and past prepared for an activation.
func (s *Server) caStateHolds(ctx context.Context, e audit.Event) (bool, error) {
	raw, err := s.caStatePeek(ctx)
	if err != nil || raw == nil {
		return false, err
	}
	var st struct {
		Authorities []struct {
			ID     int64  `json:"id"`
			Kind   string `json:"kind"`
			Status string `json:"status"`
		} `json:"authorities"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return false, fmt.Errorf("server: the CA's saved state: %w", err)
	}
	for _, a := range st.Authorities {
		if strconv.FormatInt(a.ID, 10) != e.Details["id"] || a.Kind != e.Details["kind"] {
			continue
		}
		if e.Type == audit.CAActivated || e.Type == audit.JWTKeyActivated {
			return a.Status != "prepared", nil
		}
		return true, nil
	}
	return false, nil
}

// Audit event types for configuration and endpoints.
const (
	auditConfigApplied   = "config.applied"
	auditConfigDeleted   = "config.deleted"
	auditEndpointRefused = "endpoint.refused"
)
