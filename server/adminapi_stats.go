package server

import (
	"errors"
	"net/http"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/telemetry/window"
)

// Golden metrics, edges and recent denials from the window
// (telemetry/window) that ReportStats fills.

func (s *Server) getStats(r *http.Request) (any, error) {
	q, err := adminv1.ParseStatQuery(r.URL.Query())
	if err != nil {
		return nil, err
	}
	out, err := s.stats.Stats(r.Context(), q)
	return out, queryError(err)
}

func (s *Server) getEdges(r *http.Request) (any, error) {
	q, err := adminv1.ParseStatQuery(r.URL.Query())
	if err != nil {
		return nil, err
	}
	if q.Kind != "" || q.Name != "" {
		return nil, adminv1.Errorf(http.StatusBadRequest, "edges take namespace and window only")
	}
	out, err := s.stats.Edges(r.Context(), q)
	return out, queryError(err)
}

func (s *Server) getDenials(r *http.Request) (any, error) {
	ns, limit, err := adminv1.ParseDenialsQuery(r.URL.Query())
	if err != nil {
		return nil, err
	}
	return s.stats.Denials(r.Context(), ns, limit)
}

// queryError makes the window's refusal of a query a 400 that says why.
func queryError(err error) error {
	if errors.Is(err, window.ErrBadQuery) {
		return adminv1.Errorf(http.StatusBadRequest, "%v", err)
	}
	return err
}
