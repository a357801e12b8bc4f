package server

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/server/registry"
	"github.com/sigil-mesh/sigil/strictjson"
)

// maxBody bounds an admin request's body, but for an apply's
// (maxApplyBody).
const maxBody = 1 << 20

// adminHandler routes the admin API. Its wire types and client are
// api/admin/v1's; the handlers are filed by resource: join tokens and the
// bundle (adminapi_tokens.go), entries (adminapi_entries.go), agents
// (adminapi_agents.go), configuration (adminapi_config.go), sidecars and
// services (adminapi_proxies.go), golden metrics, edges and denials
// (adminapi_stats.go). adminapi_wire.go converts the store's
// records to their wire twins.
func (s *Server) adminHandler() http.Handler {
	mux := s.metrics.adminMux()
	mux.HandleFunc("GET /v1/bundle", s.handle(s.getBundle))
	mux.HandleFunc("POST /v1/join-tokens", s.handle(s.createToken))
	mux.HandleFunc("POST /v1/entries", s.handle(s.createEntry))
	mux.HandleFunc("GET /v1/entries", s.handle(s.listEntries))
	mux.HandleFunc("DELETE /v1/entries/{id}", s.handle(s.deleteEntry))
	mux.HandleFunc("GET /v1/agents", s.handle(s.listAgents))
	mux.HandleFunc("DELETE /v1/agents/{id}", s.handle(s.evictAgent))
	mux.HandleFunc("POST /v1/agents/{id}/ban", s.handle(s.banAgent))
	mux.HandleFunc("DELETE /v1/agents/{id}/ban", s.handle(s.unbanAgent))
	mux.HandleFunc("POST /v1/config", s.handleBody(maxApplyBody, s.applyConfig))
	mux.HandleFunc("POST /v1/config/delete", s.handle(s.deleteConfigBatch))
	mux.HandleFunc("GET /v1/config/{kind}", s.handle(s.listConfig))
	mux.HandleFunc("DELETE /v1/config/{kind}/{namespace}/{name}", s.handle(s.deleteConfig))
	mux.HandleFunc("GET /v1/proxies", s.handle(s.listProxies))
	mux.HandleFunc("GET /v1/services", s.handle(s.listServices))
	mux.HandleFunc("GET /v1/tap", s.tapStream)
	mux.HandleFunc("GET /v1/stats", s.handle(s.getStats))
	mux.HandleFunc("GET /v1/edges", s.handle(s.getEdges))
	mux.HandleFunc("GET /v1/denials", s.handle(s.getDenials))
	return mux
}

// handle runs fn for a request of at most maxBody bytes and writes its
// result as JSON (bytes as they are), or its error as an adminv1.APIError.
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
			var apiErr *adminv1.APIError
			if !errors.As(err, &apiErr) {
				s.log.Error("admin request failed", "path", r.URL.Path, "error", err)
				apiErr = &adminv1.APIError{Status: http.StatusInternalServerError, Message: err.Error()}
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
			_ = json.NewEncoder(w).Encode(&adminv1.APIError{Status: http.StatusInternalServerError, Message: "admin: encoding the response: " + err.Error()})
			return
		}
		_, _ = w.Write(append(b, '\n'))
	}
}

// decodeStrict reads a JSON body, refusing unknown fields; field names
// are case-sensitive (strictjson), as the API's types spell them.
func decodeStrict(r io.Reader, v any) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return adminv1.Errorf(http.StatusBadRequest, "request body: %v", err)
	}
	if err := strictjson.Unmarshal(data, v); err != nil {
		return adminv1.Errorf(http.StatusBadRequest, "request body: %s", strings.TrimPrefix(err.Error(), "strictjson: "))
	}
	return nil
}

func storeError(err error) error {
	switch {
	case errors.Is(err, registry.ErrExists):
		return adminv1.Errorf(http.StatusConflict, "%v", err)
	case errors.Is(err, registry.ErrNotFound):
		return adminv1.Errorf(http.StatusNotFound, "%v", err)
	}
	return err
}
