package server

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/sigil-mesh/sigil/audit"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/registry"
	"github.com/sigil-mesh/sigil/selector"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// APIError is the admin API's one error type: a message and the HTTP
// status it is sent with.
type APIError struct {
	Status  int    `json:"-"`
	Message string `json:"error"`
}

func (e *APIError) Error() string { return e.Message }

func apiErrorf(status int, format string, args ...any) *APIError {
	return &APIError{Status: status, Message: fmt.Sprintf(format, args...)}
}

// TokenRequest asks for a join token.
type TokenRequest struct {
	Node string        `json:"node"`
	TTL  time.Duration `json:"ttl"`
}

// TokenResponse carries a new join token.
type TokenResponse struct {
	Token     string    `json:"token"`
	Node      string    `json:"node"`
	AgentID   string    `json:"agent_id"`
	ExpiresAt time.Time `json:"expires_at"`
}

// EntryRequest asks for a registration entry.
type EntryRequest struct {
	SPIFFEID  string        `json:"spiffe_id"`
	ParentID  string        `json:"parent_id"`
	Selectors []string      `json:"selectors"`
	X509TTL   time.Duration `json:"x509_ttl"`
	JWTTTL    time.Duration `json:"jwt_ttl"`
	// Services whose endpoints sidecars of this identity may register.
	Services []string `json:"services,omitempty"`
}

// Limits on admin requests.
const (
	MaxTokenTTL = 24 * time.Hour
	MaxSVIDTTL  = 30 * 24 * time.Hour
	maxBody     = 1 << 20
)

func (s *Server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/bundle", s.handle(s.getBundle))
	mux.HandleFunc("POST /v1/join-tokens", s.handle(s.createToken))
	mux.HandleFunc("POST /v1/entries", s.handle(s.createEntry))
	mux.HandleFunc("GET /v1/entries", s.handle(s.listEntries))
	mux.HandleFunc("DELETE /v1/entries/{id}", s.handle(s.deleteEntry))
	mux.HandleFunc("GET /v1/agents", s.handle(s.listAgents))
	mux.HandleFunc("DELETE /v1/agents/{id}", s.handle(s.evictAgent))
	mux.HandleFunc("POST /v1/config", s.handleBody(maxApplyBody, s.applyConfig))
	mux.HandleFunc("POST /v1/config/delete", s.handle(s.deleteConfigBatch))
	mux.HandleFunc("GET /v1/config/{kind}", s.handle(s.listConfig))
	mux.HandleFunc("DELETE /v1/config/{kind}/{namespace}/{name}", s.handle(s.deleteConfig))
	mux.HandleFunc("GET /v1/proxies", s.handle(s.listProxies))
	mux.HandleFunc("GET /v1/services", s.handle(s.listServices))
	return mux
}

func (s *Server) handle(fn func(*http.Request) (any, error)) http.HandlerFunc {
	return s.handleBody(maxBody, fn)
}

// handleBody is handle with a request body of at most limit bytes.
func (s *Server) handleBody(limit int64, fn func(*http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		out, err := fn(r)
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			var apiErr *APIError
			if !errors.As(err, &apiErr) {
				s.log.Error("admin request failed", "path", r.URL.Path, "error", err)
				apiErr = &APIError{Status: http.StatusInternalServerError, Message: err.Error()}
			}
			w.WriteHeader(apiErr.Status)
			_ = json.NewEncoder(w).Encode(apiErr)
			return
		}
		if b, ok := out.([]byte); ok {
			w.Header().Set("Content-Type", "application/octet-stream")
			_, _ = w.Write(b)
			return
		}
		// Encoded before the status goes out: a value that cannot be
		// encoded is a 500 that says so, not a 200 with no body.
		b, err := json.Marshal(out)
		if err != nil {
			s.log.Error("admin response could not be encoded", "path", r.URL.Path, "error", err)
			w.WriteHeader(http.StatusInternalServerError)
			_ = json.NewEncoder(w).Encode(&APIError{Status: http.StatusInternalServerError, Message: "admin: encoding the response: " + err.Error()})
			return
		}
		_, _ = w.Write(append(b, '\n'))
	}
}

// decodeStrict reads a JSON body, refusing unknown fields.
func decodeStrict(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return apiErrorf(http.StatusBadRequest, "request body: %v", err)
	}
	return nil
}

func (s *Server) getBundle(r *http.Request) (any, error) {
	b := s.ca.Bundle()
	switch f := r.URL.Query().Get("format"); f {
	case "", "pem":
		var out []byte
		for _, c := range b.X509Authorities() {
			out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
		return out, nil
	case "spiffe":
		return b.Marshal()
	default:
		return nil, apiErrorf(http.StatusBadRequest, "format %q: want pem or spiffe", f)
	}
}

func (s *Server) createToken(r *http.Request) (any, error) {
	var req TokenRequest
	if err := decodeStrict(r.Body, &req); err != nil {
		return nil, err
	}
	if err := naming.ValidateNodeName(req.Node); err != nil {
		return nil, apiErrorf(http.StatusBadRequest, "node: %v", err)
	}
	if req.TTL <= 0 || req.TTL > MaxTokenTTL {
		return nil, apiErrorf(http.StatusBadRequest, "ttl %s: must be above 0 and at most %s", req.TTL, MaxTokenTTL)
	}
	agentID, err := naming.AgentID(s.cfg.td, AttestorJoinToken, req.Node)
	if err != nil {
		return nil, apiErrorf(http.StatusBadRequest, "node: %v", err)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, err
	}
	token := base64.RawURLEncoding.EncodeToString(raw[:])
	hash := HashJoinToken(token)
	exp := s.now().Add(req.TTL)
	if err := s.audited(r.Context(), []audit.Event{{Type: audit.TokenCreated, Actor: "admin", Subject: agentID.String(), Details: map[string]string{"node": req.Node, "token_sha256": hash[:16], "expires_at": exp.UTC().Format(time.RFC3339)}}},
		func() error { return s.store.CreateJoinToken(r.Context(), hash, req.Node, exp) }); err != nil {
		return nil, err
	}
	return TokenResponse{Token: token, Node: req.Node, AgentID: agentID.String(), ExpiresAt: exp}, nil
}

// ValidateEntry checks an entry request and returns the entry it asks for;
// every problem is named by its field. The SPIFFE ID must be a workload ID
// of the trust domain with a path, outside /sigil/ (naming.ParseWorkloadID),
// and the parent an agent ID of the trust domain (naming.ParseAgentID).
func ValidateEntry(td spiffeid.TrustDomain, req EntryRequest) (registry.Entry, error) {
	var errs []error
	id, err := naming.ParseWorkloadID(td, req.SPIFFEID)
	if err != nil {
		errs = append(errs, fmt.Errorf("spiffe_id: %w", err))
	}
	parent, err := naming.ParseAgentID(td, req.ParentID)
	if err != nil {
		errs = append(errs, fmt.Errorf("parent_id: %w", err))
	}
	if len(req.Selectors) == 0 {
		errs = append(errs, errors.New("selectors: at least one is required"))
	}
	sels, err := selector.ParseAll(req.Selectors)
	if err != nil {
		errs = append(errs, fmt.Errorf("selectors: %w", err))
	}
	for name, ttl := range map[string]time.Duration{"x509_ttl": req.X509TTL, "jwt_ttl": req.JWTTTL} {
		if ttl != 0 && (ttl < MinSVIDTTL || ttl > MaxSVIDTTL) {
			errs = append(errs, fmt.Errorf("%s %s: must be between %s and %s (or 0 for the server default)", name, ttl, MinSVIDTTL, MaxSVIDTTL))
		}
	}
	for _, svc := range req.Services {
		if !naming.ValidServiceName(svc) {
			errs = append(errs, fmt.Errorf("services: %q is not a service name (a DNS label)", svc))
		}
	}
	if len(errs) > 0 {
		return registry.Entry{}, errors.Join(errs...)
	}
	return registry.Entry{SPIFFEID: id.String(), ParentID: parent.String(), Selectors: sels, X509TTL: req.X509TTL, JWTTTL: req.JWTTTL, Services: req.Services, Source: registry.SourceLocal}, nil
}

func (s *Server) createEntry(r *http.Request) (any, error) {
	var req EntryRequest
	if err := decodeStrict(r.Body, &req); err != nil {
		return nil, err
	}
	e, err := ValidateEntry(s.cfg.td, req)
	if err != nil {
		return nil, apiErrorf(http.StatusBadRequest, "entry: %v", err)
	}
	e.ID = registry.NewEntryID()
	// Audit first: a change that happened is never missing from the trail
	// (at worst a refused one appears in it, marked by the error log).
	var created registry.Entry
	err = s.audited(r.Context(), []audit.Event{{Type: audit.EntryCreated, Actor: "admin", Subject: e.SPIFFEID, Details: entryDetails(e)}}, func() error {
		var err error
		created, err = s.store.CreateEntry(r.Context(), e, s.now())
		return err
	})
	if err != nil {
		s.log.Error("audited entry creation failed", "entry", e.ID, "error", err)
		return nil, storeError(err)
	}
	s.changes.Notify()
	return created, nil
}

func (s *Server) deleteEntry(r *http.Request) (any, error) {
	e, err := s.store.GetEntry(r.Context(), r.PathValue("id"))
	if err != nil {
		return nil, storeError(err)
	}
	if err := s.audited(r.Context(), []audit.Event{{Type: audit.EntryDeleted, Actor: "admin", Subject: e.SPIFFEID, Details: entryDetails(e)}}, func() error {
		_, err := s.store.DeleteEntry(r.Context(), e.ID)
		return err
	}); err != nil {
		s.log.Error("audited entry deletion failed", "entry", e.ID, "error", err)
		return nil, storeError(err)
	}
	s.changes.Notify()
	return e, nil
}

// evictAgent removes an attested agent, as spire-server agent evict does:
// its next call (and its open Sync stream, woken by the change) is refused,
// its sidecars' endpoints leave discovery, and only a new join token
// brings the node back. The audit record is written first; if it cannot
// be, nothing changes.
func (s *Server) evictAgent(r *http.Request) (any, error) {
	a, err := s.store.GetAgent(r.Context(), r.PathValue("id"))
	if err != nil {
		return nil, storeError(err)
	}
	if err := s.audited(r.Context(), []audit.Event{{Type: audit.AgentEvicted, Actor: "admin", Subject: a.SPIFFEID, Details: map[string]string{"node": a.Node, "serial": a.Serial}}}, func() error {
		return s.store.DeleteAgent(r.Context(), a.SPIFFEID)
	}); err != nil {
		s.log.Error("audited agent eviction failed", "agent", a.SPIFFEID, "error", err)
		return nil, storeError(err)
	}
	s.log.Warn("agent evicted", "agent", a.SPIFFEID, "node", a.Node)
	s.changes.Notify()
	return a, nil
}

func storeError(err error) error {
	switch {
	case errors.Is(err, registry.ErrExists):
		return apiErrorf(http.StatusConflict, "%v", err)
	case errors.Is(err, registry.ErrNotFound):
		return apiErrorf(http.StatusNotFound, "%v", err)
	}
	return err
}

func entryDetails(e registry.Entry) map[string]string {
	sels := make([]string, len(e.Selectors))
	for i, s := range e.Selectors {
		sels[i] = s.String()
	}
	b, _ := json.Marshal(sels)
	d := map[string]string{"entry_id": e.ID, "parent_id": e.ParentID, "selectors": string(b)}
	if len(e.Services) > 0 {
		d["services"] = strings.Join(e.Services, ",")
	}
	return d
}

func (s *Server) listEntries(r *http.Request) (any, error) {
	entries, _, err := s.store.ListEntries(r.Context(), r.URL.Query().Get("parent_id"))
	if entries == nil {
		entries = []registry.Entry{}
	}
	return entries, err
}
