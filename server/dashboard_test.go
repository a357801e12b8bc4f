package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/ca"
	"github.com/sigil-mesh/sigil/dashboard"
	"github.com/sigil-mesh/sigil/server/registry"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const canaryYAML = `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: default}
spec:
  hosts: [api]
  http:
  - name: beta-users
    match: [{headers: {x-beta: {exact: "1"}}}]
    route: [{destination: {host: api, subset: v2}}]
  - name: canary
    route:
    - {destination: {host: api, subset: v1}, weight: 90}
    - {destination: {host: api.default.svc.cluster.local, subset: v2}, weight: 10}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: prod}
spec:
  hosts: [web]
  http:
  - route: [{destination: {host: web}}]
  - route: [{destination: {host: web.prod, subset: blue}, weight: 50}, {destination: {host: web.prod, subset: green}, weight: 50}]
`

// TestDashboardSplitsFromVirtualServices: the canary view's weights are
// the VirtualService routes in force, with destination hosts resolved as
// sidecars resolve them; a route that neither names a subset nor splits
// is not a canary.
func TestDashboardSplitsFromVirtualServices(t *testing.T) {
	s, _ := storeServer(t)
	body, _ := json.Marshal(adminv1.ApplyRequest{Files: []adminv1.File{{Name: "vs.yaml", Content: canaryYAML}}})
	w := httptest.NewRecorder()
	s.adminHandler().ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/config", strings.NewReader(string(body))))
	if w.Code != http.StatusOK {
		t.Fatalf("apply: %d %s", w.Code, w.Body)
	}
	got, err := dashboardView{s}.Splits(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	want := []dashboard.Split{
		{Namespace: "default", VirtualService: "api", Route: "beta-users", Hosts: []string{"api"},
			Destinations: []dashboard.Destination{{Namespace: "default", Service: "api", Subset: "v2", Weight: 100}}},
		{Namespace: "default", VirtualService: "api", Route: "canary", Hosts: []string{"api"},
			Destinations: []dashboard.Destination{{Namespace: "default", Service: "api", Subset: "v1", Weight: 90}, {Namespace: "default", Service: "api", Subset: "v2", Weight: 10}}},
		{Namespace: "prod", VirtualService: "web", Route: "#1", Hosts: []string{"web"},
			Destinations: []dashboard.Destination{{Namespace: "prod", Service: "web", Subset: "blue", Weight: 50}, {Namespace: "prod", Service: "web", Subset: "green", Weight: 50}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("splits\n got %+v\nwant %+v", got, want)
	}
	prod, err := dashboardView{s}.Splits(context.Background(), "prod")
	if err != nil || len(prod) != 1 || prod[0].VirtualService != "web" {
		t.Errorf("prod splits %+v %v", prod, err)
	}
}

// TestDashboardIdentities: the identities view lists the server's own
// SVID, each agent's and the workload SVIDs handed out, with the services
// their sidecars registered, soonest expiry first, and the CA's
// authorities with their rotation times.
func TestDashboardIdentities(t *testing.T) {
	ctx := context.Background()
	s := caServer(t)
	store, authority := s.store, s.ca
	agentID := "spiffe://example.org/sigil/agent/join_token/node1"
	if err := store.SaveAgent(ctx, registry.Agent{SPIFFEID: agentID, Attestor: AttestorJoinToken, Node: "node1", Serial: "a1", ExpiresAt: time.Now().Add(2 * time.Hour), AttestedAt: time.Now()}, time.Now()); err != nil {
		t.Fatal(err)
	}
	apiID := spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/api")
	if _, _, err := store.ReplaceProxies(ctx, agentID, []registry.ProxyRecord{{AgentID: agentID, ProxyID: "p1", SPIFFEID: apiID.String(), Service: "api", Namespace: "default", Address: "127.0.0.1:1"}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	chain, err := authority.SignX509SVID(key.Public(), apiID, 20*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	s.issued.record(apiID.String(), agentID, chain[0], time.Now())

	ids, err := dashboardView{s}.Identities(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, v := range ids.SVIDs {
		kinds = append(kinds, v.Kind)
	}
	if want := []string{dashboard.SVIDWorkload, dashboard.SVIDServer, dashboard.SVIDAgent}; !reflect.DeepEqual(kinds, want) {
		t.Fatalf("kinds by expiry %v, want %v (%+v)", kinds, want, ids.SVIDs)
	}
	w := ids.SVIDs[0]
	if w.SPIFFEID != apiID.String() || w.Node != "node1" || !reflect.DeepEqual(w.Services, []string{"api.default"}) || w.Serial != chain[0].SerialNumber.Text(16) || !w.NotAfter.Equal(chain[0].NotAfter) {
		t.Errorf("workload SVID %+v", w)
	}
	var active int
	for _, a := range ids.Authorities {
		if a.Status == ca.StatusActive {
			active++
			if a.PrepareNextAt.IsZero() || !a.ActivateNextAt.After(a.PrepareNextAt) || !a.NotAfter.After(a.ActivateNextAt) {
				t.Errorf("active %s: rotation times %+v", a.Kind, a)
			}
		}
	}
	if active != 3 {
		t.Errorf("authorities %+v, want an active root, intermediate and JWT key", ids.Authorities)
	}
}

// TestIssuedSVIDsBounded: an SVID expired longer than issuedKeep leaves
// the list, and an older SVID never replaces a newer one.
func TestIssuedSVIDsBounded(t *testing.T) {
	var is issuedSVIDs
	now := time.Now()
	leaf := func(notAfter time.Time, serial int64) *x509.Certificate {
		return &x509.Certificate{NotAfter: notAfter, SerialNumber: big.NewInt(serial)}
	}
	is.record("a", "agent", leaf(now.Add(time.Hour), 2), now)
	is.record("a", "agent", leaf(now.Add(time.Minute), 1), now)
	is.record("b", "agent", leaf(now.Add(-2*issuedKeep), 3), now)
	got := is.list(now)
	if len(got) != 1 || got[0].id != "a" || got[0].serial != "2" {
		t.Errorf("list %+v", got)
	}
	if len(is.m) != 1 {
		t.Errorf("expired entries kept: %d", len(is.m))
	}
}
