package server

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/audit"
	"github.com/sigil-mesh/sigil/naming"
)

func (s *Server) getBundle(r *http.Request) (any, error) {
	b := s.ca.Bundle()
	switch f := r.URL.Query().Get("format"); f {
	case "", "pem":
		return bundlePEM(b), nil
	case "spiffe":
		return b.Marshal()
	default:
		return nil, adminv1.Errorf(http.StatusBadRequest, "format %q: want pem or spiffe", f)
	}
}

func (s *Server) createToken(r *http.Request) (any, error) {
	var req adminv1.TokenRequest
	if err := decodeStrict(r.Body, &req); err != nil {
		return nil, err
	}
	if err := naming.ValidateNodeName(req.Node); err != nil {
		return nil, adminv1.Errorf(http.StatusBadRequest, "node: %v", err)
	}
	if req.TTL <= 0 || req.TTL > adminv1.MaxTokenTTL {
		return nil, adminv1.Errorf(http.StatusBadRequest, "ttl %s: must be above 0 and at most %s", req.TTL, adminv1.MaxTokenTTL)
	}
	agentID, err := naming.AgentID(s.cfg.td, AttestorJoinToken, req.Node)
	if err != nil {
		return nil, adminv1.Errorf(http.StatusBadRequest, "node: %v", err)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, fmt.Errorf("server: join token: %w", err)
	}
	token := base64.RawURLEncoding.EncodeToString(raw[:])
	hash := HashJoinToken(token)
	exp := s.now().Add(req.TTL)
	if err := s.audited(r.Context(), []audit.Event{{Type: audit.TokenCreated, Actor: "admin", Subject: agentID.String(), Details: map[string]string{"node": req.Node, "token_sha256": hash[:16], "expires_at": exp.UTC().Format(time.RFC3339)}}},
		func() error { return s.store.CreateJoinToken(r.Context(), hash, req.Node, exp) }); err != nil {
		return nil, err
	}
	return adminv1.TokenResponse{Token: token, Node: req.Node, AgentID: agentID.String(), ExpiresAt: exp}, nil
}
