package ca

import (
	"crypto/x509"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/naming"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestServingCertScope: the serving-certificate path signs only the
// server's own ID, only plain host names, and its certificates verify as
// TLS server certificates for those names against the bundle's roots.
func TestServingCertScope(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	c := newTestCA(t, clk, &memState{}, t.TempDir())
	key := newKey(t)
	server := naming.ServerID(td)
	hosts := []string{"sigil-server.sigil-system.svc", "sigil-server.sigil-system.svc.cluster.local", "127.0.0.1"}
	chain, err := c.SignServingCert(key.Public(), server, hosts, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf := chain[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != server.String() {
		t.Fatalf("URIs = %v, want the server's ID alone", leaf.URIs)
	}
	if !slices.Equal(leaf.DNSNames, hosts[:2]) || len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) {
		t.Fatalf("SANs dns=%v ip=%v", leaf.DNSNames, leaf.IPAddresses)
	}
	roots := x509.NewCertPool()
	for _, r := range c.Bundle().X509Authorities() {
		roots.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, ic := range chain[1:] {
		inter.AddCert(ic)
	}
	for _, h := range hosts {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: h, Roots: roots, Intermediates: inter, CurrentTime: clk.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("verify for %s: %v", h, err)
		}
	}
	// Workload SVIDs carry no DNS SAN.
	w, err := c.SignX509SVID(key.Public(), spiffeid.RequireFromPath(td, "/ns/default/sa/web"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(w[0].DNSNames)+len(w[0].IPAddresses) != 0 {
		t.Fatalf("workload SVID has host SANs %v %v", w[0].DNSNames, w[0].IPAddresses)
	}

	refused := []struct {
		name  string
		id    spiffeid.ID
		hosts []string
		want  string
	}{
		{"workload id", spiffeid.RequireFromPath(td, "/ns/default/sa/web"), hosts, "only the server's own ID"},
		{"no host", server, nil, "0 host names"},
		{"wildcard", server, []string{"*.sigil-system.svc"}, "neither an IP address nor a DNS name"},
		{"trailing dot", server, []string{"sigil-server.sigil-system.svc."}, "neither"},
		{"upper case", server, []string{"Sigil-Server"}, "neither"},
		{"too many", server, slices.Repeat([]string{"a"}, MaxServingNames+1), "want 1 to"},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.SignServingCert(key.Public(), tc.id, tc.hosts, time.Hour)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}
