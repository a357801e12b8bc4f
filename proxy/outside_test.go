package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/traffic"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// outsideMesh is a sidecar of web in prod whose hosts outside the mesh
// (any name) are all reached at one test server's address, with the
// resources of yaml in force.
func outsideMesh(t *testing.T, addr, yaml string) *outbound {
	t.Helper()
	rs, err := traffic.Parse([]byte(yaml), "outside.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if err := traffic.Validate(r); err != nil {
			t.Fatal(err)
		}
	}
	self := spiffeid.RequireFromString("spiffe://example.org/ns/prod/sa/web")
	names, err := meshNames(self, "", DefaultClusterDomain)
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{cfg: &checked{}, log: slog.New(slog.DiscardHandler), names: names, metrics: testMetrics(), id: &identity{id: self}, access: &jsonLines{}}
	o := testOutbound(p)
	o.mirrors = make(chan struct{}, maxMirrorsInFlight)
	o.dialOutside = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	o.setState(traffic.Compile(1, rs), 1, 1, nil)
	return o
}

// TestVirtualServiceAppliesOutsideMesh: a VirtualService applies to a
// host outside the mesh (its own, or one covered by a wildcard) as to a
// mesh service, and a route of a mesh service may go to a host outside
// the mesh: match, timeout (504), retries (a second attempt after a 503),
// headers set on the request and the response, rewrite, fault,
// directResponse; the request goes as the host's DestinationRule says,
// without the mesh's identity headers. A destination no DestinationRule
// says how to reach is answered 502 naming the host and what to add; a
// route to a mesh service from an outside host's VirtualService goes to
// that service (503 here: it has no endpoint).
func TestVirtualServiceAppliesOutsideMesh(t *testing.T) {
	var calls atomic.Int64
	type seen struct {
		path, host string
		header     http.Header
	}
	got := make(chan seen, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		got <- seen{r.URL.Path, r.Host, r.Header.Clone()}
		switch {
		case r.URL.Path == "/slow":
			select {
			case <-time.After(2 * time.Second):
			case <-r.Context().Done():
			}
		case r.URL.Path == "/flaky" && n%2 == 1:
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "outside %s", r.URL.Path)
	}))
	t.Cleanup(srv.Close)
	o := outsideMesh(t, srv.Listener.Addr().String(), `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cnn, namespace: prod}
spec:
  hosts: [edition.cnn.com]
  http:
  - match: [{uri: {prefix: /slow}}]
    timeout: 100ms
    route: [{destination: {host: edition.cnn.com}}]
  - match: [{uri: {prefix: /flaky}}]
    retries: {attempts: 2, retryOn: 5xx}
    route: [{destination: {host: edition.cnn.com}}]
  - match: [{uri: {prefix: /old}}]
    rewrite: {uri: /new}
    headers:
      request: {set: {x-route: cnn}}
      response: {set: {x-answered-by: route}}
    route: [{destination: {host: edition.cnn.com}}]
  - match: [{uri: {prefix: /teapot}}]
    directResponse: {status: 418}
  - match: [{uri: {prefix: /abort}}]
    fault: {abort: {httpStatus: 499, percentage: {value: 100}}}
    route: [{destination: {host: edition.cnn.com}}]
  - match: [{uri: {prefix: /mesh}}]
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /unruled}}]
    route: [{destination: {host: api.unruled.com}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: wild, namespace: prod}
spec:
  hosts: ["*.example.com"]
  http:
  - headers: {request: {set: {x-wild: "yes"}}}
    route: [{destination: {host: www.example.com}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: prod}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /dev}}]
    timeout: 100ms
    route: [{destination: {host: dev.reviews.com}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cnn, namespace: prod}
spec:
  host: edition.cnn.com
  trafficPolicy: {tls: {mode: DISABLE}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: example, namespace: prod}
spec:
  host: "*.example.com"
  trafficPolicy: {tls: {mode: DISABLE}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dev, namespace: prod}
spec:
  host: dev.reviews.com
  trafficPolicy: {tls: {mode: DISABLE}}
`)
	for _, tt := range []struct {
		name, url    string
		status       int
		body         string // a part of the answer's body
		calls        int64  // attempts that reached the server
		path, header string // what the server saw: path, and header=value
		respHeader   string // a header of the answer, name=value
	}{
		{"timeout", "http://edition.cnn.com/slow", 504, "timeout", 1, "/slow", "", ""},
		{"retry on 503", "http://edition.cnn.com/flaky", 200, "outside /flaky", 2, "/flaky", "", ""},
		{"rewrite and headers", "http://edition.cnn.com/old/x", 200, "outside /new/x", 1, "/new/x", "X-Route=cnn", "X-Answered-By=route"},
		{"direct response", "http://edition.cnn.com/teapot", 418, "", 0, "", "", ""},
		{"fault abort", "http://edition.cnn.com/abort", 499, "", 0, "", "", ""},
		{"to a mesh service", "http://edition.cnn.com/mesh", 503, "no healthy upstream for reviews", 0, "", "", ""},
		{"no rule for the destination", "http://edition.cnn.com/unruled", 502, "add a DestinationRule for host api.unruled.com", 0, "", "", ""},
		{"no route matches", "http://edition.cnn.com/elsewhere", 404, "no route", 0, "", "", ""},
		{"wildcard host", "http://a.b.example.com/w", 200, "outside /w", 1, "/w", "X-Wild=yes", ""},
		{"mesh route to an outside host", "http://reviews/dev/page", 200, "outside /dev/page", 1, "/dev/page", "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			calls.Store(0)
			r := httptest.NewRequest("GET", tt.url, nil)
			r.RequestURI = tt.url // as the app sends it to an explicit proxy
			r.Header.Set("X-Forwarded-Client-Cert", "By=spiffe://example.org/ns/prod/sa/admin")
			w := httptest.NewRecorder()
			o.ServeHTTP(w, r)
			if w.Code != tt.status || !strings.Contains(w.Body.String(), tt.body) {
				t.Fatalf("%d %q, want %d with %q", w.Code, w.Body.String(), tt.status, tt.body)
			}
			if n := calls.Load(); n != tt.calls {
				t.Errorf("%d attempts reached the host, want %d", n, tt.calls)
			}
			if tt.respHeader != "" {
				k, v, _ := strings.Cut(tt.respHeader, "=")
				if w.Header().Get(k) != v {
					t.Errorf("answer's %s: %q, want %q", k, w.Header().Get(k), v)
				}
			}
			var last seen
			for len(got) > 0 {
				last = <-got
			}
			if tt.calls == 0 {
				return
			}
			if last.path != tt.path {
				t.Errorf("the host got %s, want %s", last.path, tt.path)
			}
			if k, v, ok := strings.Cut(tt.header, "="); ok && last.header.Get(k) != v {
				t.Errorf("the host got %s %q, want %q", k, last.header.Get(k), v)
			}
			if v := last.header.Get("X-Forwarded-Client-Cert"); v != "" {
				t.Errorf("the host outside the mesh got the mesh's X-Forwarded-Client-Cert: %q", v)
			}
		})
	}
	// Golden metrics: the outside host is the destination service.
	m := o.p.metrics
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	services := map[string]bool{}
	for _, f := range families {
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if f.GetName() == "sigil_requests_total" && l.GetName() == "destination_service" {
					services[l.GetValue()] = true
				}
			}
		}
	}
	// A host a wildcard covers is labelled by the wildcard: the app's
	// names mint no series.
	if !services["edition.cnn.com"] || !services["*.example.com"] || services["a.b.example.com"] {
		t.Errorf("sigil_requests_total destination_service values %v, want edition.cnn.com and *.example.com, not a.b.example.com", services)
	}
	if n := counterValue(t, m.retries.WithLabelValues("edition.cnn.com")); n != 1 {
		t.Errorf("sigil_retries_total{destination_service=edition.cnn.com} = %v, want 1", n)
	}
}

// TestMirrorOutsideMesh: a mirror to a host outside the mesh goes through
// its DestinationRule's target, with the Host's -shadow suffix; one no
// rule says how to reach is counted as no_rule, never silently.
func TestMirrorOutsideMesh(t *testing.T) {
	shadow := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(strings.Split(r.Host, ":")[0], "-shadow") {
			shadow <- r.Host + r.URL.Path
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	o := outsideMesh(t, srv.Listener.Addr().String(), `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cnn, namespace: prod}
spec:
  hosts: [edition.cnn.com]
  http:
  - match: [{uri: {prefix: /lost}}]
    mirror: {host: nowhere.example.org}
    route: [{destination: {host: edition.cnn.com}}]
  - mirror: {host: copy.cnn.com}
    route: [{destination: {host: edition.cnn.com}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cnn, namespace: prod}
spec:
  host: "*.cnn.com"
  trafficPolicy: {tls: {mode: DISABLE}}
`)
	w := httptest.NewRecorder()
	o.ServeHTTP(w, httptest.NewRequest("GET", "http://edition.cnn.com/m", nil))
	if w.Code != 200 {
		t.Fatalf("%d %q", w.Code, w.Body.String())
	}
	select {
	case s := <-shadow:
		if s != "edition.cnn.com-shadow/m" {
			t.Errorf("mirror got %q, want edition.cnn.com-shadow/m", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no mirrored copy reached the host outside the mesh")
	}
	o.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "http://edition.cnn.com/lost", nil))
	if n := counterValue(t, o.p.metrics.mirrors.WithLabelValues("nowhere.example.org", "no_rule")); n != 1 {
		t.Errorf("mirror without a rule counted %v times as no_rule, want 1", n)
	}
}

// TestTCPRoutesOutsideMesh: tcp routes apply to a host outside the mesh
// (a CONNECT to it), and a mesh service's tcp route may send the
// connection to a host outside the mesh, through its DestinationRule's
// target; a destination no rule says how to reach is refused with 502
// naming the host and what to add.
func TestTCPRoutesOutsideMesh(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "hi")
			c.Close()
		}
	}()
	o := outsideMesh(t, ln.Addr().String(), `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: prod}
spec:
  hosts: [db.example.com]
  tcp:
  - match: [{port: 5432}]
    route: [{destination: {host: replica.example.com, port: {number: 6432}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: prod}
spec:
  hosts: [reviews]
  tcp:
  - match: [{port: 9000}]
    route: [{destination: {host: dev.reviews.com}}]
  - match: [{port: 9001}]
    route: [{destination: {host: api.unruled.org}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: example, namespace: prod}
spec:
  host: "*.example.com"
  trafficPolicy: {tls: {mode: DISABLE}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dev, namespace: prod}
spec:
  host: dev.reviews.com
  trafficPolicy: {tls: {mode: DISABLE}}
`)
	dialled := make(chan string, 4)
	next := o.dialOutside
	o.dialOutside = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dialled <- addr
		return next(ctx, network, addr)
	}
	srv := httptest.NewServer(o)
	t.Cleanup(srv.Close)
	for _, tt := range []struct {
		authority string
		status    int
		dialled   string // the address the sidecar dialled; "" for none
		body      string
	}{
		{"db.example.com:5432", 200, "replica.example.com:6432", "hi"},
		{"reviews:9000", 200, "dev.reviews.com:9000", "hi"},
		{"reviews:9001", 502, "", "add a DestinationRule for host api.unruled.org"},
	} {
		c, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", tt.authority, tt.authority)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil {
			t.Fatalf("%s: %v", tt.authority, err)
		}
		var body []byte
		if resp.StatusCode == 200 {
			body, _ = io.ReadAll(br)
		} else {
			body, _ = io.ReadAll(resp.Body)
		}
		c.Close()
		if resp.StatusCode != tt.status || !strings.Contains(string(body), tt.body) {
			t.Errorf("%s: %d %q, want %d with %q", tt.authority, resp.StatusCode, body, tt.status, tt.body)
		}
		got := ""
		select {
		case got = <-dialled:
		default:
		}
		if got != tt.dialled {
			t.Errorf("%s: the sidecar dialled %q, want %q", tt.authority, got, tt.dialled)
		}
	}
}

// TestUpgradeOutsideMesh: a WebSocket upgrade to a host outside the
// mesh, routed by its VirtualService or by its DestinationRule alone, is
// carried as an upgrade (it was sent as a plain GET, its Upgrade header
// stripped as hop-by-hop).
func TestUpgradeOutsideMesh(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "no upgrade", http.StatusBadRequest)
			return
		}
		c, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		buf.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nhello-ws")
		buf.Flush()
	}))
	t.Cleanup(srv.Close)
	o := outsideMesh(t, srv.Listener.Addr().String(), `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ws, namespace: prod}
spec:
  hosts: [ws.example.com]
  http:
  - route: [{destination: {host: ws.example.com}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ws, namespace: prod}
spec:
  host: "*.example.com"
  trafficPolicy: {tls: {mode: DISABLE}}
`)
	front := httptest.NewServer(o)
	t.Cleanup(front.Close)
	for _, host := range []string{"ws.example.com", "rule-only.example.com"} {
		c, err := net.Dial("tcp", front.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET http://%s/chat HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", host, host)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			b, _ := io.ReadAll(resp.Body)
			t.Errorf("%s: %d %q, want 101", host, resp.StatusCode, b)
			c.Close()
			continue
		}
		got, _ := io.ReadAll(br)
		c.Close()
		if string(got) != "hello-ws" {
			t.Errorf("%s: after the upgrade: %q, want hello-ws", host, got)
		}
	}
}

// TestRefusedHostSaysWhatToChange: a request for a host outside the mesh
// that no DestinationRule (exported to the sidecar's namespace) says how
// to reach gets 502 and an answer naming the DestinationRule that would
// let it through; a malformed host gets 400 and no such advice.
func TestRefusedHostSaysWhatToChange(t *testing.T) {
	res, _ := naming.NewResolver("demo", naming.DefaultClusterDomain)
	tests := []struct {
		host     string
		code     int
		want     []string
		wantNone string
	}{
		{"127.0.0.1:8080", http.StatusBadGateway, []string{`"127.0.0.1"`, "DestinationRule", "trafficPolicy.tls.mode DISABLE, SIMPLE or MUTUAL"}, ""},
		{"api.example.com", http.StatusBadGateway, []string{`"api.example.com"`, "DestinationRule"}, ""},
		{"a..b", http.StatusBadRequest, []string{"bad host"}, "DestinationRule"},
	}
	for _, tt := range tests {
		_, err := res.Authority(tt.host)
		if err == nil {
			t.Fatalf("%s: resolved", tt.host)
		}
		w := httptest.NewRecorder()
		refuseName(w, httptest.NewRequest("GET", "http://"+tt.host+"/", nil), err)
		body := w.Body.String()
		if w.Code != tt.code {
			t.Errorf("%s: %d %q, want %d", tt.host, w.Code, body, tt.code)
		}
		for _, s := range tt.want {
			if !strings.Contains(body, s) {
				t.Errorf("%s: %q lacks %q", tt.host, body, s)
			}
		}
		if tt.wantNone != "" && strings.Contains(body, tt.wantNone) {
			t.Errorf("%s: %q has %q", tt.host, body, tt.wantNone)
		}
	}
}

// TestServiceCountersKeepNamespacesApart: the sidecar's own counters
// (faults, retries, ejections, overflows, mirrors) label a mesh service
// by its host, as sigil_requests_total does, so reviews of prod and
// reviews of staging count apart; a host outside the mesh by the host its
// VirtualService names.
func TestServiceCountersKeepNamespacesApart(t *testing.T) {
	o := outsideMesh(t, "127.0.0.1:1", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: prod}
spec:
  hosts: [reviews, reviews.staging.svc.cluster.local]
  http:
  - fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route:
    - destination: {host: reviews}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: outside, namespace: prod}
spec:
  hosts: ["*.example.com"]
  http:
  - fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route:
    - destination: {host: api.example.com}
`)
	for _, host := range []string{"reviews.prod", "reviews.staging", "reviews.staging", "a.example.com"} {
		w := httptest.NewRecorder()
		o.ServeHTTP(w, httptest.NewRequest("GET", "http://"+host+"/", nil))
		if w.Code != http.StatusTeapot {
			t.Fatalf("%s: %d %q, want the fault's 418", host, w.Code, w.Body)
		}
	}
	m := o.p.metrics
	for svc, want := range map[naming.Service]float64{{Name: "reviews", Namespace: "prod"}: 1, {Name: "reviews", Namespace: "staging"}: 2} {
		if n := counterValue(t, m.faults.WithLabelValues(o.p.names.FQDN(svc), "abort")); n != want {
			t.Errorf("sigil_faults_injected_total{destination_service=%q} = %v, want %v", o.p.names.FQDN(svc), n, want)
		}
	}
	if n := counterValue(t, m.faults.WithLabelValues("*.example.com", "abort")); n != 1 {
		t.Errorf("sigil_faults_injected_total{destination_service=*.example.com} = %v, want 1", n)
	}
	st := o.state.Load()
	prod := o.buildCluster(st, naming.Service{Name: "reviews", Namespace: "prod"}, "", 0)
	staging := o.buildCluster(st, naming.Service{Name: "reviews", Namespace: "staging"}, "", 0)
	if prod.Service == staging.Service {
		t.Errorf("the clusters of reviews.prod and reviews.staging both count as %q", prod.Service)
	}
}
