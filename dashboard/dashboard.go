// Package dashboard is the web dashboard sigil-server serves (default
// 127.0.0.1:8080): a page of plain HTML, CSS and JavaScript embedded in
// the binary (assets/, no build step, nothing loaded from elsewhere, under
// a Content-Security-Policy of default-src 'self') and the small JSON API
// under /api/ it polls every few seconds.
//
// The figures come from the server's golden-metrics window (a StatsSource
// and a DenialsSource); what is configured and issued — services and
// their sidecars, identities and the CA's rotation state, the weights of
// VirtualService routes — from an Inventory the server provides. The
// package knows neither: both are interfaces declared here.
//
// dashboard.go holds the handler and its sources, api.go the JSON API,
// listen.go the listener rule (loopback, or TLS with an admin SVID).
//
// Typical use:
//
//	h, err := dashboard.New(dashboard.Config{Stats: store, Denials: store, Inventory: srv})
//	lis, err := dashboard.Listen(ctx, dashboard.ListenConfig{Addr: "127.0.0.1:8080"})
//	http.Serve(lis, h)
package dashboard

import (
	"context"
	"embed"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/ca"
)

//go:embed assets
var assets embed.FS

// StatsSource answers golden-metric queries over the server's window: the
// telemetry store.
type StatsSource interface {
	Stats(ctx context.Context, q adminv1.StatQuery) (adminv1.StatResponse, error)
	Edges(ctx context.Context, q adminv1.StatQuery) (adminv1.EdgesResponse, error)
}

// DenialsSource lists recent policy denials, newest first; namespace ""
// means all. The telemetry store.
type DenialsSource interface {
	Denials(ctx context.Context, namespace string, limit int) (adminv1.DenialsResponse, error)
}

// Inventory is what the server knows without any traffic: the services
// its sidecars registered, and the identities it issued with the CA's
// state.
type Inventory interface {
	Services(ctx context.Context) ([]adminv1.ServiceInfo, error)
	Identities(ctx context.Context) (Identities, error)
}

// SplitSource lists the weighted routes of the VirtualServices in force,
// namespace "" meaning all.
type SplitSource interface {
	Splits(ctx context.Context, namespace string) ([]Split, error)
}

// Identities is what the identities view shows.
type Identities struct {
	// SVIDs are the newest X.509-SVIDs this server process issued (or, for
	// agents, recorded), one per SPIFFE ID and holder, soonest expiry
	// first.
	SVIDs []SVID `json:"svids"`
	// Authorities is the CA's rotation state.
	Authorities []ca.AuthorityStatus `json:"authorities"`
	// BundleSequence is the trust bundle's sequence number.
	BundleSequence uint64 `json:"bundle_sequence"`
}

// SVID kinds.
const (
	SVIDWorkload = "workload"
	SVIDAgent    = "agent"
	SVIDServer   = "server"
)

// SVID is one issued X.509-SVID.
type SVID struct {
	SPIFFEID string `json:"spiffe_id"`
	// Kind is SVIDWorkload, SVIDAgent or SVIDServer.
	Kind string `json:"kind"`
	// Agent is the agent the SVID was issued through (workloads) and Node
	// its node.
	Agent    string    `json:"agent,omitempty"`
	Node     string    `json:"node,omitempty"`
	Serial   string    `json:"serial"`
	IssuedAt time.Time `json:"issued_at,omitzero"`
	NotAfter time.Time `json:"not_after"`
	// Services are the services sidecars with this identity registered.
	Services []string `json:"services,omitempty"`
}

// Split is one VirtualService HTTP route whose traffic is divided by
// weight (a canary or blue/green), as configured.
type Split struct {
	// Namespace and VirtualService name the resource; Route is the
	// route's name, or "#N" (its index from 0) when it has none.
	Namespace      string `json:"namespace"`
	VirtualService string `json:"virtual_service"`
	Route          string `json:"route"`
	// Hosts are the VirtualService's hosts, as written.
	Hosts        []string      `json:"hosts"`
	Destinations []Destination `json:"destinations"`
}

// Destination is one weighted destination of a Split.
type Destination struct {
	Namespace string `json:"namespace"`
	Service   string `json:"service"`
	Subset    string `json:"subset,omitempty"`
	// Weight is the configured weight in percent (Istio's rule: an
	// unweighted single destination is 100).
	Weight int32 `json:"weight"`
}

// Config is what New takes. Stats, Denials, Inventory and Splits are
// required; Metrics, when set, is served at /metrics on the same listener.
type Config struct {
	Stats     StatsSource
	Denials   DenialsSource
	Inventory Inventory
	Splits    SplitSource
	Metrics   http.Handler
	// Now is the clock the API stamps its answers with; time.Now if nil.
	Now func() time.Time
	Log *slog.Logger
}

// ErrMissingSource is returned by New when a required source is nil.
var ErrMissingSource = errors.New("dashboard: a required source is missing")

// contentSecurityPolicy keeps the page to its own origin: no inline
// script or style, nothing fetched from elsewhere, not framed.
const contentSecurityPolicy = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

// New returns the dashboard's handler: the page at /, its assets, the
// JSON API under /api/ and, if cfg.Metrics is set, /metrics.
func New(cfg Config) (http.Handler, error) {
	if cfg.Stats == nil || cfg.Denials == nil || cfg.Inventory == nil || cfg.Splits == nil {
		return nil, ErrMissingSource
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	static, err := fs.Sub(assets, "assets")
	if err != nil {
		return nil, err
	}
	a := &api{cfg: cfg}
	mux := http.NewServeMux()
	mux.Handle("GET /", http.FileServerFS(static))
	mux.HandleFunc("GET /api/overview", a.handle(a.overview, "window", "namespace"))
	mux.HandleFunc("GET /api/service", a.handle(a.service, "window", "namespace", "name"))
	mux.HandleFunc("GET /api/canaries", a.handle(a.canaries, "window", "namespace"))
	mux.HandleFunc("GET /api/graph", a.handle(a.graph, "window", "namespace"))
	mux.HandleFunc("GET /api/identities", a.handle(a.identities))
	mux.HandleFunc("GET /api/denials", a.handle(a.denials, "namespace", "limit"))
	if cfg.Metrics != nil {
		mux.Handle("GET /metrics", cfg.Metrics)
	}
	return secureHeaders(mux), nil
}

// secureHeaders sets the headers every answer carries.
func secureHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}
