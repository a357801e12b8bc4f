package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/privatefile"
	"github.com/sigil-mesh/sigil/traffic"
)

// testPKI is a CA, a server certificate for ext.example and a client
// certificate, written as PEM files in a directory.
type testPKI struct {
	dir                       string
	caFile, certFile, keyFile string
	serverCert                tls.Certificate
	pool                      *x509.CertPool
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, eku x509.ExtKeyUsage, dns ...string) ([]byte, *ecdsa.PrivateKey) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: dns, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{eku}, KeyUsage: x509.KeyUsageDigitalSignature}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, k
	}
	p := testPKI{dir: dir, caFile: filepath.Join(dir, "ca.pem"), certFile: filepath.Join(dir, "client.pem"), keyFile: filepath.Join(dir, "client.key"), pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	write := func(path, typ string, der []byte, mode os.FileMode) {
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
			t.Fatal(err)
		}
	}
	write(p.caFile, "CERTIFICATE", caDER, 0o644)
	srvDER, srvKey := leaf(2, x509.ExtKeyUsageServerAuth, "ext.example")
	p.serverCert = tls.Certificate{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}
	cliDER, cliKey := leaf(3, x509.ExtKeyUsageClientAuth)
	write(p.certFile, "CERTIFICATE", cliDER, 0o644)
	keyDER, _ := x509.MarshalECPrivateKey(cliKey)
	write(p.keyFile, "EC PRIVATE KEY", keyDER, 0o600)
	return p
}

// TestTLSOriginationModes: SIMPLE checks the server against
// caCertificates and the SNI name or subjectAltNames; MUTUAL presents the
// client certificate and refuses a key file others may read; each failure
// names what failed.
func TestTLSOriginationModes(t *testing.T) {
	pki := newTestPKI(t)
	newServer := func(clientAuth tls.ClientAuthType) *httptest.Server {
		s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
		s.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are the point
		s.TLS = &tls.Config{Certificates: []tls.Certificate{pki.serverCert}, ClientAuth: clientAuth, ClientCAs: pki.pool}
		s.StartTLS()
		t.Cleanup(s.Close)
		return s
	}
	simple, mutual := newServer(tls.NoClientCert), newServer(tls.RequireAndVerifyClientCert)
	loose := filepath.Join(pki.dir, "loose.key")
	data, _ := os.ReadFile(pki.keyFile)
	os.WriteFile(loose, data, 0o644)
	junk := filepath.Join(pki.dir, "junk.pem")
	os.WriteFile(junk, []byte("not pem"), 0o644)
	yes := true
	tests := []struct {
		name      string
		server    *httptest.Server
		s         traffic.ClientTLSSettings
		buildErr  string // error building the config
		handshake string // error of the request; "" for success
	}{
		{"simple, ca and sni", simple, traffic.ClientTLSSettings{Mode: "SIMPLE", CACertificates: pki.caFile, SNI: "ext.example"}, "", ""},
		{"simple, ip host checks ip SAN", simple, traffic.ClientTLSSettings{Mode: "SIMPLE", CACertificates: pki.caFile}, "", ""},
		{"simple, wrong sni", simple, traffic.ClientTLSSettings{Mode: "SIMPLE", CACertificates: pki.caFile, SNI: "other.example"}, "", "certificate is valid for ext.example"},
		{"simple, system roots", simple, traffic.ClientTLSSettings{Mode: "SIMPLE", SNI: "ext.example"}, "", "unknown authority"},
		{"simple, subjectAltNames", simple, traffic.ClientTLSSettings{Mode: "SIMPLE", CACertificates: pki.caFile, SubjectAltNames: []string{"ext.example"}}, "", ""},
		{"simple, other subjectAltNames", simple, traffic.ClientTLSSettings{Mode: "SIMPLE", CACertificates: pki.caFile, SubjectAltNames: []string{"db.example"}}, "", "none of subjectAltNames"},
		{"simple, insecureSkipVerify", simple, traffic.ClientTLSSettings{Mode: "SIMPLE", InsecureSkipVerify: &yes}, "", ""},
		{"simple to a server that wants a client certificate", mutual, traffic.ClientTLSSettings{Mode: "SIMPLE", CACertificates: pki.caFile}, "", "certificate"},
		{"mutual", mutual, traffic.ClientTLSSettings{Mode: "MUTUAL", CACertificates: pki.caFile, ClientCertificate: pki.certFile, PrivateKey: pki.keyFile}, "", ""},
		{"mutual, loose key", mutual, traffic.ClientTLSSettings{Mode: "MUTUAL", CACertificates: pki.caFile, ClientCertificate: pki.certFile, PrivateKey: loose}, "tls.privateKey", ""},
		{"mutual, missing cert", mutual, traffic.ClientTLSSettings{Mode: "MUTUAL", ClientCertificate: filepath.Join(pki.dir, "none.pem"), PrivateKey: pki.keyFile}, "tls.clientCertificate", ""},
		{"junk ca", simple, traffic.ClientTLSSettings{Mode: "SIMPLE", CACertificates: junk}, "tls.caCertificates", ""},
	}
	for _, tt := range tests {
		cfg, err := originationTLS(&tt.s, "127.0.0.1")
		if tt.buildErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.buildErr) {
				t.Errorf("%s: build error %v, want one naming %s", tt.name, err, tt.buildErr)
			}
			if tt.s.PrivateKey == loose && !errors.Is(err, privatefile.ErrReadable) {
				t.Errorf("%s: %v does not wrap privatefile.ErrReadable", tt.name, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
		resp, err := c.Get(tt.server.URL)
		if err == nil {
			resp.Body.Close()
		}
		switch {
		case tt.handshake == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.handshake != "" && err == nil:
			t.Errorf("%s: succeeded, want %q", tt.name, tt.handshake)
		case tt.handshake != "" && !strings.Contains(err.Error(), tt.handshake):
			t.Errorf("%s: %v, want %q", tt.name, err, tt.handshake)
		}
	}
	if cfg, err := originationTLS(&traffic.ClientTLSSettings{Mode: "DISABLE"}, "x"); cfg != nil || err != nil {
		t.Errorf("DISABLE: %v %v, want plain text", cfg, err)
	}
}

// TestExternalPortDefaults: without a port the sidecar uses the port of
// what goes on the wire.
func TestExternalPortDefaults(t *testing.T) {
	for _, tt := range []struct {
		tls             bool
		authority, want string
	}{
		{false, "api.example.com", "api.example.com:80"},
		{true, "api.example.com", "api.example.com:443"},
		{true, "api.example.com:8443", "api.example.com:8443"},
		{false, "[::1]:81", "::1:81"},
	} {
		et := &externalTarget{}
		if tt.tls {
			et.tls = &tls.Config{}
		}
		h, p, err := et.hostPort(tt.authority)
		if err != nil || h+":"+p != tt.want {
			t.Errorf("%q (tls %v): %s:%s %v, want %s", tt.authority, tt.tls, h, p, err, tt.want)
		}
	}
	if _, _, err := (&externalTarget{}).hostPort("a.example:0"); err == nil {
		t.Error("port 0 accepted")
	}
}

// TestExternalTLSPerPort: a rule's portLevelSettings say how to reach each
// port of a host outside the mesh (Istio's egress TLS origination task:
// SIMPLE at one port); each port gets its own cached target, and a port
// no level of the rule covers is not reached (the caller refuses it).
func TestExternalTLSPerPort(t *testing.T) {
	pki := newTestPKI(t)
	tlsSrv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("tls")) }))
	tlsSrv.TLS = &tls.Config{Certificates: []tls.Certificate{pki.serverCert}}
	tlsSrv.StartTLS()
	t.Cleanup(tlsSrv.Close)
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("plain")) }))
	t.Cleanup(plain.Close)
	tlsPort, plainPort := tlsSrv.Listener.Addr().(*net.TCPAddr).Port, plain.Listener.Addr().(*net.TCPAddr).Port
	o := outboundWith(t, fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ext}
spec:
  host: 127.0.0.1
  trafficPolicy:
    portLevelSettings:
    - port: {number: %d}
      tls: {mode: SIMPLE, caCertificates: %s, sni: ext.example}
    - port: {number: %d}
      tls: {mode: DISABLE}
`, tlsPort, pki.caFile, plainPort))
	for _, tt := range []struct {
		port    int
		handled bool
		body    string
	}{
		{tlsPort, true, "tls"},
		{plainPort, true, "plain"},
		{1, false, ""}, // no level of the rule says how to reach port 1
	} {
		authority := net.JoinHostPort("127.0.0.1", strconv.Itoa(tt.port))
		r := httptest.NewRequest("GET", "http://"+authority+"/", nil)
		rw := httptest.NewRecorder()
		_, handled := o.toExternal(&statusRecorder{ResponseWriter: rw}, r, authority)
		if handled != tt.handled || (handled && (rw.Code != http.StatusOK || rw.Body.String() != tt.body)) {
			t.Errorf("port %d: handled %v, %d %q; want handled %v, 200 %q", tt.port, handled, rw.Code, rw.Body.String(), tt.handled, tt.body)
		}
	}
	st := o.state.Load()
	a, _ := o.externalFor(st, "127.0.0.1", uint16(tlsPort))
	b, _ := o.externalFor(st, "127.0.0.1", uint16(plainPort))
	if a == nil || b == nil || a == b || a.tls == nil || b.tls != nil || a.tls.ServerName != "ext.example" {
		t.Errorf("targets per port: %+v %+v; want TLS with SNI ext.example at %d, plain at %d", a, b, tlsPort, plainPort)
	}
}

// TestExternalRuleWildcardSNI: a wildcard DestinationRule for hosts
// outside the mesh ("*.example.test", SIMPLE) reaches each host it covers
// with that host as SNI (the host the app named, as Istio defaults sni),
// one target per host; a host it does not cover is not reached.
func TestExternalRuleWildcardSNI(t *testing.T) {
	o := outboundWith(t, `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ext}
spec:
  host: "*.example.test"
  trafficPolicy: {tls: {mode: SIMPLE}}
`)
	st := o.state.Load()
	a, errA := o.externalFor(st, "a.example.test", 443)
	b, errB := o.externalFor(st, "B.Sub.Example.Test.", 443)
	if errA != nil || errB != nil || a == nil || b == nil || a == b {
		t.Fatalf("targets: %+v (%v), %+v (%v)", a, errA, b, errB)
	}
	if a.tls == nil || a.tls.ServerName != "a.example.test" || b.tls == nil || b.tls.ServerName != "B.Sub.Example.Test" {
		t.Errorf("sni: %q and %q, want the names the app gave", a.tls.ServerName, b.tls.ServerName)
	}
	if c, err := o.externalFor(st, "a.example.org", 443); c != nil || err != nil {
		t.Errorf("uncovered host reached: %+v %v", c, err)
	}
}
