package dashboard

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/naming"
)

// Bounds of the API's query parameters.
const (
	// DefaultWindow is the window figures are taken over unless the
	// page asks for another (window=30s...15m).
	DefaultWindow = time.Minute
	// MinWindow is the server's resolution; MaxWindow the window it keeps.
	MinWindow = 10 * time.Second
	MaxWindow = 15 * time.Minute
	// DefaultDenials and MaxDenials bound the denials listed.
	DefaultDenials = 50
	MaxDenials     = 500
)

// api answers the page's JSON requests.
type api struct{ cfg Config }

// apiError is an answer with an HTTP status; its message is shown on the
// page as it is.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &apiError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// handle writes fn's result as JSON, or its error as {"error": "..."}.
// The query may hold only the parameters named in params, each once: a
// misspelt or repeated one is a 400, never read as the default.
func (a *api) handle(fn func(*http.Request) (any, error), params ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		err := checkParams(r, params)
		var out any
		if err == nil {
			out, err = fn(r)
		}
		if err == nil {
			var b []byte
			if b, err = json.Marshal(out); err == nil {
				_, _ = w.Write(append(b, '\n'))
				return
			}
		}
		status := http.StatusInternalServerError
		var ae *apiError
		if errors.As(err, &ae) {
			status = ae.status
		} else {
			a.cfg.Log.Error("dashboard request failed", "path", r.URL.Path, "error", err)
		}
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
	}
}

// checkParams refuses a query with a parameter not in params or given
// more than once.
func checkParams(r *http.Request, params []string) error {
	for k, vs := range r.URL.Query() {
		if !slices.Contains(params, k) {
			return badRequest("unknown query parameter %q (want %v)", k, params)
		}
		if len(vs) != 1 {
			return badRequest("query parameter %q given %d times", k, len(vs))
		}
	}
	return nil
}

// window reads the window query parameter: a Go duration from MinWindow
// to MaxWindow, DefaultWindow when absent.
func window(r *http.Request) (time.Duration, error) {
	s := r.URL.Query().Get("window")
	if s == "" {
		return DefaultWindow, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < MinWindow || d > MaxWindow {
		return 0, badRequest("window %q: want a duration from %s to %s", s, MinWindow, MaxWindow)
	}
	return d, nil
}

// scope reads the window and namespace query parameters most views take.
func scope(r *http.Request) (time.Duration, string, error) {
	win, err := window(r)
	if err != nil {
		return 0, "", err
	}
	ns, err := namespace(r)
	return win, ns, err
}

// namespace reads an optional namespace query parameter.
func namespace(r *http.Request) (string, error) {
	ns := r.URL.Query().Get("namespace")
	if ns != "" && !naming.ValidNamespace(ns) {
		return "", badRequest("namespace %q: want a DNS label", ns)
	}
	return ns, nil
}

// Header is what every timed answer starts with: the server's clock (the
// page shows expiries against it, not the browser's) and the window.
type Header struct {
	Now           time.Time `json:"now"`
	WindowSeconds float64   `json:"window_seconds,omitempty"`
}

// ServiceRow is a row of the overview table: a service's golden metrics
// and how many sidecars registered it.
type ServiceRow struct {
	adminv1.StatRow
	// Endpoints is the number of sidecars registered for the service
	// (Meshed counts those that reported traffic in the window).
	Endpoints int `json:"endpoints"`
}

// Overview is GET /api/overview: every service, with or without traffic.
type Overview struct {
	Header
	Rows []ServiceRow `json:"rows"`
}

func (a *api) overview(r *http.Request) (any, error) {
	win, ns, err := scope(r)
	if err != nil {
		return nil, err
	}
	rows, err := a.serviceRows(r, ns, "", win)
	if err != nil {
		return nil, err
	}
	return Overview{Header: a.header(win), Rows: rows}, nil
}

func (a *api) header(win time.Duration) Header {
	return Header{Now: a.cfg.Now().UTC(), WindowSeconds: win.Seconds()}
}

// serviceRows joins the service rows of the window with the registered
// services, so a service with no traffic still has its row.
func (a *api) serviceRows(r *http.Request, ns, name string, win time.Duration) ([]ServiceRow, error) {
	stats, err := a.cfg.Stats.Stats(r.Context(), adminv1.StatQuery{Kind: adminv1.StatService, Namespace: ns, Name: name, Window: win})
	if err != nil {
		return nil, fmt.Errorf("dashboard: stats: %w", err)
	}
	svcs, err := a.cfg.Inventory.Services(r.Context())
	if err != nil {
		return nil, fmt.Errorf("dashboard: services: %w", err)
	}
	by := map[naming.Service]*ServiceRow{}
	for _, s := range stats.Rows {
		by[naming.Service{Namespace: s.Namespace, Name: s.Name}] = &ServiceRow{StatRow: s}
	}
	for _, s := range svcs {
		if (ns != "" && s.Namespace != ns) || (name != "" && s.Name != name) {
			continue
		}
		key := naming.Service{Namespace: s.Namespace, Name: s.Name}
		row := by[key]
		if row == nil {
			row = &ServiceRow{StatRow: adminv1.StatRow{Kind: adminv1.StatService, Namespace: s.Namespace, Name: s.Name}}
			by[key] = row
		}
		row.Endpoints = s.Endpoints
	}
	out := make([]ServiceRow, 0, len(by))
	for _, row := range by {
		out = append(out, *row)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// ServicePage is GET /api/service?namespace=NS&name=SVC: one service's
// figures, its subsets and routes, and its edges by peer identity.
type ServicePage struct {
	Header
	Service ServiceRow        `json:"service"`
	Subsets []adminv1.StatRow `json:"subsets"`
	Routes  []adminv1.StatRow `json:"routes"`
	// Identities are the SPIFFE IDs the service's sidecars hold;
	// Outbound is the traffic they sent, Inbound what the service
	// received.
	Identities []string       `json:"identities"`
	Inbound    []adminv1.Edge `json:"inbound"`
	Outbound   []adminv1.Edge `json:"outbound"`
}

func (a *api) service(r *http.Request) (any, error) {
	win, err := window(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	ns, name := q.Get("namespace"), q.Get("name")
	if !naming.ValidNamespace(ns) || !naming.ValidServiceName(name) {
		return nil, badRequest("namespace %q and name %q: want a service's namespace and name (DNS labels)", ns, name)
	}
	rows, err := a.serviceRows(r, ns, name, win)
	if err != nil {
		return nil, err
	}
	page := ServicePage{Header: a.header(win), Service: ServiceRow{StatRow: adminv1.StatRow{Kind: adminv1.StatService, Namespace: ns, Name: name}}}
	if len(rows) > 0 {
		page.Service = rows[0]
	}
	for _, kind := range []string{adminv1.StatSubset, adminv1.StatRoute} {
		res, err := a.cfg.Stats.Stats(r.Context(), adminv1.StatQuery{Kind: kind, Namespace: ns, Name: name, Window: win})
		if err != nil {
			return nil, fmt.Errorf("dashboard: %s stats: %w", kind, err)
		}
		if kind == adminv1.StatSubset {
			page.Subsets = res.Rows
		} else {
			page.Routes = res.Rows
		}
	}
	svcs, err := a.cfg.Inventory.Services(r.Context())
	if err != nil {
		return nil, fmt.Errorf("dashboard: services: %w", err)
	}
	for _, s := range svcs {
		if s.Namespace == ns && s.Name == name {
			page.Identities = append(page.Identities, s.Identities...)
		}
	}
	edges, err := a.cfg.Stats.Edges(r.Context(), adminv1.StatQuery{Window: win})
	if err != nil {
		return nil, fmt.Errorf("dashboard: edges: %w", err)
	}
	page.Inbound, page.Outbound = []adminv1.Edge{}, []adminv1.Edge{}
	for _, e := range edges.Edges {
		if e.DestinationNamespace == ns && e.DestinationService == name {
			page.Inbound = append(page.Inbound, e)
		}
		if slices.Contains(page.Identities, e.Source) {
			page.Outbound = append(page.Outbound, e)
		}
	}
	return page, nil
}

// Canary is one weighted route with, per destination, the figures of the
// subset it sends to.
type Canary struct {
	Split
	Rows []CanaryRow `json:"rows"`
}

// CanaryRow is one destination of a Canary: its configured weight and
// the subset's golden metrics (nil when it had no traffic in the window).
type CanaryRow struct {
	Destination
	Stats *adminv1.StatRow `json:"stats,omitempty"`
}

// Canaries is GET /api/canaries.
type Canaries struct {
	Header
	Canaries []Canary `json:"canaries"`
}

func (a *api) canaries(r *http.Request) (any, error) {
	win, ns, err := scope(r)
	if err != nil {
		return nil, err
	}
	splits, err := a.cfg.Splits.Splits(r.Context(), ns)
	if err != nil {
		return nil, fmt.Errorf("dashboard: splits: %w", err)
	}
	subsets := map[naming.Service][]adminv1.StatRow{}
	out := Canaries{Header: a.header(win), Canaries: []Canary{}}
	for _, sp := range splits {
		c := Canary{Split: sp}
		for _, d := range sp.Destinations {
			key := naming.Service{Namespace: d.Namespace, Name: d.Service}
			rows, ok := subsets[key]
			if !ok {
				res, err := a.cfg.Stats.Stats(r.Context(), adminv1.StatQuery{Kind: adminv1.StatSubset, Namespace: d.Namespace, Name: d.Service, Window: win})
				if err != nil {
					return nil, fmt.Errorf("dashboard: subset stats: %w", err)
				}
				rows = res.Rows
				subsets[key] = rows
			}
			row := CanaryRow{Destination: d}
			for i := range rows {
				if rows[i].Subset == d.Subset {
					row.Stats = &rows[i]
				}
			}
			c.Rows = append(c.Rows, row)
		}
		out.Canaries = append(out.Canaries, c)
	}
	return out, nil
}

// Identities is GET /api/identities.
type identitiesPage struct {
	Header
	Identities
}

func (a *api) identities(r *http.Request) (any, error) {
	ids, err := a.cfg.Inventory.Identities(r.Context())
	if err != nil {
		return nil, fmt.Errorf("dashboard: identities: %w", err)
	}
	return identitiesPage{Header: a.header(0), Identities: ids}, nil
}

// DenialsPage is GET /api/denials?namespace=NS&limit=N.
type DenialsPage struct {
	Header
	Denials []adminv1.Denial `json:"denials"`
}

func (a *api) denials(r *http.Request) (any, error) {
	ns, err := namespace(r)
	if err != nil {
		return nil, err
	}
	limit := DefaultDenials
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxDenials {
			return nil, badRequest("limit %q: want 1 to %d", s, MaxDenials)
		}
		limit = n
	}
	res, err := a.cfg.Denials.Denials(r.Context(), ns, limit)
	if err != nil {
		return nil, fmt.Errorf("dashboard: denials: %w", err)
	}
	if res.Denials == nil {
		res.Denials = []adminv1.Denial{}
	}
	return DenialsPage{Header: a.header(0), Denials: res.Denials}, nil
}
