package proxy

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/naming"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestParseUpstream(t *testing.T) {
	tests := []struct {
		in      string
		eps     int
		id      string
		wantErr string
	}{
		{in: "api=127.0.0.1:15006", eps: 1},
		{in: "api=10.0.0.1:15006,10.0.0.2:15006@spiffe://example.org/ns/default/sa/api", eps: 2, id: "spiffe://example.org/ns/default/sa/api"},
		{in: "api=[::1]:15006", eps: 1},
		{in: "api", wantErr: "want NAME=HOST:PORT"},
		{in: "=1.2.3.4:5", wantErr: "want NAME=HOST:PORT"},
		{in: "API=1.2.3.4:5", wantErr: "only a-z"},
		{in: "api=1.2.3.4", wantErr: "want HOST:PORT"},
		{in: "api=1.2.3.4:0", wantErr: "bad port"},
		{in: "api=1.2.3.4:5@not-an-id", wantErr: "identity"},
		{in: "api=:5", wantErr: "want HOST:PORT"},
	}
	for _, tt := range tests {
		u, err := ParseUpstream(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: error %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		if len(u.Endpoints) != tt.eps || (tt.id != "" && u.ID.String() != tt.id) {
			t.Errorf("%q: %+v", tt.in, u)
		}
	}
}

func TestValidateNamesEveryFlag(t *testing.T) {
	_, err := Config{Service: "Bad_Name", Inbound: "x", Outbound: "y", Admin: "z", Labels: []string{"novalue"}, Upstreams: []string{"a=b", "api=1.2.3.4:5", "api=1.2.3.4:6"},
		AuditExport: []string{"gopher://collector", "none"}, AuditSpoolMaxBytes: -1, DecisionLogMask: []string{"/request/headers/authorization"}}.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	for _, flag := range []string{"--socket", "--service", "--app", "--inbound", "--outbound", "--admin", "--label", "--upstream \"a=b\"", "--upstream api given twice",
		"--audit-export: sink: gopher://collector: unknown scheme", "--audit-export none: cannot be combined", "--audit-spool-max-bytes -1", "--decision-log-mask"} {
		if !strings.Contains(err.Error(), flag) {
			t.Errorf("error does not name %s:\n%v", flag, err)
		}
	}
}

func FuzzParseUpstream(f *testing.F) {
	f.Add("api=127.0.0.1:15006@spiffe://example.org/ns/a/sa/b")
	f.Add("a=h:1,h:2")
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseUpstream(s)
		if err != nil {
			return
		}
		if u.Name == "" || len(u.Endpoints) == 0 {
			t.Fatalf("accepted %q as %+v", s, u)
		}
	})
}

func TestMeshHostNamesOfRequests(t *testing.T) {
	names, err := meshNames(spiffeid.RequireFromString("spiffe://example.org/ns/prod/sa/web"), "", DefaultClusterDomain)
	if err != nil {
		t.Fatal(err)
	}
	o := &outbound{p: &Proxy{names: names}}
	api := naming.Service{Name: "api", Namespace: "prod"}
	for _, tt := range []struct {
		method, target, host string
		want                 naming.Service
		err                  error
	}{
		{"GET", "http://api/x", "", api, nil},
		{"GET", "http://API:8080/x", "", api, nil},
		{"GET", "http://api./x", "", api, nil},
		{"GET", "http://api.other.svc.cluster.local/x", "", naming.Service{Name: "api", Namespace: "other"}, nil},
		{"GET", "/x", "web:80", naming.Service{Name: "web", Namespace: "prod"}, nil},
		{"GET", "/x", "api.prod.svc", api, nil},
		// Absolute form: the target's authority, not the Host header.
		{"GET", "http://api.github.com/user", "api", naming.Service{}, naming.ErrNotInMesh},
		{"GET", "/user", "api.github.com", naming.Service{}, naming.ErrNotInMesh},
		{"CONNECT", "api.github.com:443", "api.github.com:443", naming.Service{}, naming.ErrNotInMesh},
		{"CONNECT", "api:443", "api:443", api, nil},
		{"GET", "http://a@api/x", "", naming.Service{}, naming.ErrMalformed},
		{"GET", "http://%C3%A4pi/x", "", naming.Service{}, naming.ErrMalformed},
		{"GET", "/x", "api..", naming.Service{}, naming.ErrMalformed},
		{"GET", "/x", "", naming.Service{}, naming.ErrMalformed},
	} {
		r := httptest.NewRequest(tt.method, tt.target, nil)
		if tt.host != "" || !r.URL.IsAbs() {
			r.Host = tt.host
		}
		got, err := o.serviceOf(r)
		if got != tt.want || !errors.Is(err, tt.err) {
			t.Errorf("%s %s (Host %q) = %+v, %v; want %+v, %v", tt.method, tt.target, tt.host, got, err, tt.want, tt.err)
		}
	}
	if got := headerMap(map[string][]string{"X-A": {"1", "2"}}); got["x-a"] != "1,2" {
		t.Fatalf("headerMap %v", got)
	}
}

func TestTracingFlags(t *testing.T) {
	base := Config{Socket: "s", Service: "api", App: "127.0.0.1:8080", Inbound: DefaultInbound, Outbound: DefaultOutbound, Admin: DefaultAdmin, Policy: "p", IdleTimeout: time.Minute}
	for _, tt := range []struct {
		endpoint string
		sampling float64
		want     string // the collector URL, or the error's words
	}{
		{"http://127.0.0.1:4318", 0.01, "http://127.0.0.1:4318/v1/traces"},
		{"https://otel.example:4318/custom/path", 1, "https://otel.example:4318/custom/path"},
		{"127.0.0.1:4318", 0.01, "--otlp-endpoint"},
		{"grpc://127.0.0.1:4317", 0.01, "--otlp-endpoint"},
		{"http://127.0.0.1:4318", 1.5, "--trace-sampling"},
	} {
		c := base
		c.OTLPEndpoint, c.TraceSampling = tt.endpoint, tt.sampling
		got, err := c.Validate()
		switch {
		case err != nil && !strings.Contains(err.Error(), tt.want):
			t.Errorf("%s %v: %v, want %q", tt.endpoint, tt.sampling, err, tt.want)
		case err == nil && got.otlpURL != tt.want:
			t.Errorf("%s: collector URL %q, want %q", tt.endpoint, got.otlpURL, tt.want)
		}
	}
}

// --upstream and --advertise read addresses and identities through
// naming's one rule: what the old hand-written checks let through (a sign
// in the port, a numeric non-IP host, an unreachable IP, an ID no
// workload can hold) is refused.
func TestEndpointAddressRuleUpstream(t *testing.T) {
	for in, want := range map[string]string{
		"api=1.2.3.4:+80":   "bad port",
		"api=0x7f.1:80":     "neither an IP address",
		"api=10.0.0.300:80": "neither an IP address",
		"api=0.0.0.0:15006": "unspecified",
		"api=[::]:15006":    "unspecified",
		"api=224.0.0.1:80":  "multicast",
		"api=host_name:80":  "neither an IP address",
		"api=1.2.3.4:5@spiffe://example.org/sigil/server":              "reserved",
		"api=1.2.3.4:5@spiffe://example.org":                           "needs a path",
		"api=1.2.3.4:5@spiffe://example.org/sigil/agent/join_token/n1": "reserved",
	} {
		if _, err := ParseUpstream(in); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "--upstream") {
			t.Errorf("ParseUpstream(%q) = %v, want an error with %q", in, err, want)
		}
	}
	u, err := ParseUpstream("api=api.prod.svc:15006,[::1]:15006@spiffe://other.org/ns/a/sa/b")
	if err != nil || len(u.Endpoints) != 2 || u.Endpoints[0].String() != "api.prod.svc:15006" || u.ID.String() != "spiffe://other.org/ns/a/sa/b" {
		t.Fatalf("%+v, %v", u, err)
	}
	for adv, want := range map[string]string{"0.0.0.0:15006": "unspecified", "api:15006": "want IP:PORT", "10.0.0.2:+1": "bad port"} {
		_, err := Config{Advertise: adv}.Validate()
		if err == nil || !strings.Contains(err.Error(), "--advertise") || !strings.Contains(err.Error(), want) {
			t.Errorf("--advertise %s: %v, want %q", adv, err, want)
		}
	}
}
