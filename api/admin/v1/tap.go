package adminv1

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"syscall"
	"time"
)

// Bounds of a tap, which the server enforces at every hop (package tap).
const (
	// TapDefaultMax is a tap's number of events when none is asked for;
	// TapMaxEvents the most one may ask for.
	TapDefaultMax = 100
	TapMaxEvents  = 10000
	// TapDefaultRate is a tap's events per second when none is asked for;
	// TapMaxRate the most one may ask for.
	TapDefaultRate = 100
	TapMaxRate     = 1000
)

// TapRequest asks for a live sample of a service's requests, sent as the
// query string of GET /v1/tap (namespace, service, path, method, max,
// rate). The server refuses values out of bounds (package tap's).
type TapRequest struct {
	// Namespace and Service name the service whose sidecars are tapped
	// (both directions: the requests they receive and those they send).
	// An empty Namespace is "default".
	Namespace string `json:"namespace,omitempty"`
	Service   string `json:"service"`
	// PathPrefix keeps requests whose normalized path (no query) starts
	// with it; Method those with this method. Empty: all.
	PathPrefix string `json:"path,omitempty"`
	Method     string `json:"method,omitempty"`
	// Max ends the tap after this many events; Rate bounds its events per
	// second at every hop. 0: the defaults (100 and 100).
	Max  int `json:"max,omitempty"`
	Rate int `json:"rate,omitempty"`
}

// TapEvent is one sampled request. It carries no header, no body and no
// query string: credentials (authorization, cookie...) travel in those,
// and a tap must never show them.
type TapEvent struct {
	// Time is when the request reached the reporting sidecar.
	Time time.Time `json:"time"`
	// Direction is "inbound" (the tapped service received it) or
	// "outbound" (it sent it).
	Direction string `json:"direction"`
	// Reporter is the SPIFFE ID of the sidecar that saw it, as its agent
	// attested it.
	Reporter  string `json:"reporter"`
	Method    string `json:"method"`
	Authority string `json:"authority"`
	// Path is the normalized path, without the query.
	Path     string `json:"path"`
	Protocol string `json:"protocol"`
	// Status is the HTTP status sent to the caller (0: none was).
	Status int `json:"status"`
	// LatencyMS is the time to the response headers, in milliseconds.
	LatencyMS float64 `json:"latency_ms"`
	// Source is the caller's SPIFFE ID (proven by mTLS for inbound
	// requests); Destination the callee's where the reporter knows it.
	Source               string `json:"source"`
	Destination          string `json:"destination,omitempty"`
	DestinationNamespace string `json:"destination_namespace,omitempty"`
	DestinationService   string `json:"destination_service,omitempty"`
	DestinationSubset    string `json:"destination_subset,omitempty"`
	Route                string `json:"route,omitempty"`
}

// TapStatus says how a tap stands; the last line of a tap carries End.
type TapStatus struct {
	// Sidecars is how many sidecars have taken the tap up so far.
	Sidecars int `json:"sidecars"`
	// Events is how many events the tap has sent; Dropped how many the
	// server let fall (past the rate, or a client reading too slowly).
	Events  int    `json:"events"`
	Dropped uint64 `json:"dropped"`
	// End, on the last line, says why the tap ended.
	End string `json:"end,omitempty"`
}

// TapLine is one line of GET /v1/tap's JSON-lines answer: an event or a
// status.
type TapLine struct {
	Event  *TapEvent  `json:"event,omitempty"`
	Status *TapStatus `json:"status,omitempty"`
}

// maxTapLine bounds one line of a tap's answer.
const maxTapLine = 64 << 10

// Query is the request as GET /v1/tap's query string.
func (r TapRequest) Query() url.Values {
	q := url.Values{"service": {r.Service}}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("namespace", r.Namespace)
	set("path", r.PathPrefix)
	set("method", r.Method)
	if r.Max != 0 {
		q.Set("max", strconv.Itoa(r.Max))
	}
	if r.Rate != 0 {
		q.Set("rate", strconv.Itoa(r.Rate))
	}
	return q
}

// Tap runs a tap and calls fn with each line as it arrives, until the
// server ends the tap (fn has seen a status with End), ctx is done
// (returns ctx's error; closing the connection ends the tap on the
// server), or fn returns an error (returned as it is). Unlike the other
// calls it has no overall timeout: a tap lasts as long as its client.
func (c *AdminClient) Tap(ctx context.Context, req TapRequest, fn func(TapLine) error) error {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://sigil-server/v1/tap?"+req.Query().Encode(), nil)
	if err != nil {
		return fmt.Errorf("adminv1: %w", err)
	}
	resp, err := (&http.Client{Transport: c.http.Transport}).Do(hreq)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%w (admin socket %s)", ErrServerNotRunning, c.socket)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("adminv1: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var apiErr APIError
		if json.NewDecoder(http.MaxBytesReader(nil, resp.Body, maxTapLine)).Decode(&apiErr) == nil && apiErr.Message != "" {
			apiErr.Status = resp.StatusCode
			return &apiErr
		}
		return fmt.Errorf("adminv1: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 4096), maxTapLine)
	for sc.Scan() {
		var line TapLine
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return fmt.Errorf("adminv1: decoding a tap line: %w", err)
		}
		if err := fn(line); err != nil {
			return err
		}
		if line.Status != nil && line.Status.End != "" {
			return nil
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("adminv1: reading the tap: %w", err)
	}
	return errors.New("adminv1: the server ended the tap without saying why")
}
