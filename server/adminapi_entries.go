package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/audit"
	"github.com/sigil-mesh/sigil/k8s/podidentity"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/selector"
	"github.com/sigil-mesh/sigil/server/registry"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ValidateEntry checks an entry request and returns the entry it asks for;
// every problem is named by its field. The SPIFFE ID must be a workload ID
// of the trust domain with a path, outside /sigil/ (naming.ParseWorkloadID),
// and the parent an agent ID of the trust domain (naming.ParseAgentID).
func ValidateEntry(td spiffeid.TrustDomain, req adminv1.EntryRequest) (registry.Entry, error) {
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
		if ttl != 0 && (ttl < MinSVIDTTL || ttl > adminv1.MaxSVIDTTL) {
			errs = append(errs, fmt.Errorf("%s %s: must be between %s and %s (or 0 for the server default)", name, ttl, MinSVIDTTL, adminv1.MaxSVIDTTL))
		}
	}
	for _, svc := range req.Services {
		name, ns, qualified := strings.Cut(svc, ".")
		if !naming.ValidServiceName(name) || qualified && !naming.ValidNamespace(ns) {
			errs = append(errs, fmt.Errorf("services: %q is not a service name (a DNS label), nor NAME.NAMESPACE", svc))
		}
	}
	if req.ID != "" && !validEntryID(req.ID) {
		errs = append(errs, fmt.Errorf("id %s: want 1 to 64 of A-Z a-z 0-9 . _ -", naming.Quote(req.ID)))
	}
	// Automatic pod identity names its entries k8s-pod-<uid> (package
	// podidentity); an entry given by hand under such a name would share
	// its ID with a pod's, and an agent's batch keyed by ID would sign one
	// for the other.
	if strings.HasPrefix(req.ID, podidentity.EntryIDPrefix) {
		errs = append(errs, fmt.Errorf("id %s: the prefix %s is reserved for the entries of automatic pod identity", naming.Quote(req.ID), podidentity.EntryIDPrefix))
	}
	if len(errs) > 0 {
		return registry.Entry{}, errors.Join(errs...)
	}
	return registry.Entry{ID: req.ID, SPIFFEID: id.String(), ParentID: parent.String(), Selectors: sels, X509TTL: req.X509TTL, JWTTTL: req.JWTTTL, Services: req.Services, Source: registry.SourceLocal}, nil
}

// validEntryID reports whether id may name an entry given by hand.
func validEntryID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

func (s *Server) createEntry(r *http.Request) (any, error) {
	var req adminv1.EntryRequest
	if err := decodeStrict(r.Body, &req); err != nil {
		return nil, err
	}
	e, err := ValidateEntry(s.cfg.td, req)
	if err != nil {
		return nil, adminv1.Errorf(http.StatusBadRequest, "entry: %v", err)
	}
	if e.ID == "" {
		e.ID = registry.NewEntryID()
	}
	// Audit first: a change that happened is never missing from the trail
	// (at worst a refused one appears in it, marked by the error log).
	var created registry.Entry
	err = s.audited(r.Context(), []audit.Event{{Type: audit.EntryCreated, Actor: "admin", Subject: e.SPIFFEID, Details: entryDetails(e)}}, func() error {
		var err error
		created, err = s.store.CreateEntry(r.Context(), e, s.now())
		return err
	})
	if err != nil {
		s.log.Error("audited entry creation failed", "entry_id", e.ID, "error", err)
		return nil, storeError(err)
	}
	s.changes.Notify()
	return wireEntry(created), nil
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
		s.log.Error("audited entry deletion failed", "entry_id", e.ID, "error", err)
		return nil, storeError(err)
	}
	s.changes.Notify()
	return wireEntry(e), nil
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
	return wireEntries(entries), err
}
