// Package bench holds Sigil's benchmarks. They run with `make bench`, never
// with `make test`, and each reports its figure next to a baseline taken in
// the same run, since this machine is shared and noisy.
package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/e2e/harness"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"go.step.sm/crypto/x509util"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

func TestMain(m *testing.M) { harness.Main(m, "..", false) }

func p256(b *testing.B) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	return k
}

func issuer(b *testing.B) (*x509.Certificate, *ecdsa.PrivateKey) {
	key := p256(b)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench CA"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		b.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

// BenchmarkSignPath compares the two ways to sign an X.509-SVID in
// process: crypto/x509 with a hand-built template (what ca.SignX509SVID
// does) and go.step.sm/crypto's x509util from a CSR and template.
func BenchmarkSignPath(b *testing.B) {
	parent, parentKey := issuer(b)
	leafKey := p256(b)
	id, _ := url.Parse("spiffe://example.org/ns/default/sa/web")
	csrDER, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id}}, leafKey)
	csr, _ := x509.ParseCertificateRequest(csrDER)
	b.Run("crypto_x509", func(b *testing.B) {
		for b.Loop() {
			tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), URIs: []*url.URL{id},
				KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, BasicConstraintsValid: true}
			if _, err := x509.CreateCertificate(rand.Reader, tmpl, parent, leafKey.Public(), parentKey); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")
	})
	b.Run("x509util", func(b *testing.B) {
		for b.Loop() {
			cert, err := x509util.NewCertificate(csr, x509util.WithTemplate(x509util.DefaultLeafTemplate, x509util.CreateTemplateData("", nil)))
			if err != nil {
				b.Fatal(err)
			}
			c := cert.GetCertificate()
			c.NotBefore, c.NotAfter = time.Now(), time.Now().Add(time.Hour)
			c.SerialNumber = big.NewInt(2)
			if _, err := x509util.CreateCertificate(c, parent, leafKey.Public(), parentKey); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")
	})
}

// BenchmarkBatchAPI measures SVIDs signed per second through the real
// server's BatchNewX509SVID over gRPC and mTLS, 100 CSRs per call, with a
// real agent's SVID. Baseline: the in-process crypto/x509 signing rate of
// BenchmarkSignPath/crypto_x509 in the same run.
func BenchmarkBatchAPI(b *testing.B) {
	const batch = 100
	m := harness.StartMesh(b)
	entries := make([]string, batch)
	for i := range entries {
		// A uid no process has: the agent signs these entries once at start,
		// and no workload ever receives them.
		entries[i] = m.Entry("bench", "spiffe://example.org/bench/w"+strconv.Itoa(i), "--selector", "unix:uid:4000000")
	}
	a := m.StartAgent("bench")
	api := agentClient(b, m, a)
	params := make([]*agentv1.X509SVIDParams, batch)
	for i := range params {
		csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, p256(b))
		params[i] = &agentv1.X509SVIDParams{EntryId: entries[i], Csr: csr}
	}
	req := &agentv1.BatchNewX509SVIDRequest{Params: params}
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		resp, err := api.BatchNewX509SVID(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		if e := resp.GetResults()[0].GetError(); e != "" {
			b.Fatal(e)
		}
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "svids/s")
}

func agentClient(b *testing.B, m *harness.Mesh, a *harness.AgentProc) agentv1.AgentClient {
	svid, err := x509svid.Load(filepath.Join(a.DataDir, "agent_svid.pem"), filepath.Join(a.DataDir, "agent_svid.key"))
	if err != nil {
		b.Fatal(err)
	}
	roots, err := x509bundle.Load(spiffeid.RequireTrustDomainFromString(harness.TrustDomain), m.BundleFile())
	if err != nil {
		b.Fatal(err)
	}
	cfg := tlsconfig.MTLSClientConfig(svid, roots, tlsconfig.AuthorizeID(spiffeid.RequireFromString("spiffe://example.org/sigil/server")))
	conn, err := grpc.NewClient("passthrough:///"+m.Addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return agentv1.NewAgentClient(conn)
}

// BenchmarkEntryToSVID measures the time from creating an entry (admin
// API) to its SVID reaching a go-spiffe client watching the Workload API:
// server → agent stream → signing → push. Baseline in the same run: one
// admin API round trip (entry list).
func BenchmarkEntryToSVID(b *testing.B) {
	m := harness.StartMesh(b)
	m.Entry("node1", "spiffe://example.org/bench/first", "--selector", "unix:uid:"+strconv.Itoa(os.Getuid()))
	a := m.StartAgent("node1")
	admin := adminv1.NewAdminClient(adminv1.AdminSocket(m.DataDir))
	ctx := context.Background()

	w := &idWatcher{seen: map[spiffeid.ID]time.Time{}, wake: make(chan struct{})}
	client, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+a.Socket))
	if err != nil {
		b.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); client.WatchX509Context(wctx, w) }()
	b.Cleanup(func() { cancel(); <-done; client.Close() })
	w.wait(b, spiffeid.RequireFromString("spiffe://example.org/bench/first"))

	var roundTrip time.Duration
	const rtN = 50
	for range rtN {
		start := time.Now()
		if _, err := admin.ListEntries(ctx, ""); err != nil {
			b.Fatal(err)
		}
		roundTrip += time.Since(start)
	}
	b.ResetTimer()
	i := 0
	for b.Loop() {
		id := spiffeid.RequireFromString(fmt.Sprintf("spiffe://example.org/bench/e%d", i))
		i++
		if _, err := admin.CreateEntry(ctx, adminv1.EntryRequest{SPIFFEID: id.String(), ParentID: harness.AgentID("node1"), Selectors: []string{"unix:uid:" + strconv.Itoa(os.Getuid())}}); err != nil {
			b.Fatal(err)
		}
		w.wait(b, id)
	}
	perOp := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(float64(perOp.Microseconds())/1000, "ms/entry")
	b.ReportMetric(float64((roundTrip/rtN).Microseconds())/1000, "ms/admin-rtt")
	b.ReportMetric(float64(perOp)/float64(roundTrip/rtN), "x-admin-rtt")
}

type idWatcher struct {
	mu   sync.Mutex
	seen map[spiffeid.ID]time.Time
	wake chan struct{}
}

func (w *idWatcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range c.SVIDs {
		if _, ok := w.seen[s.ID]; !ok {
			w.seen[s.ID] = time.Now()
		}
	}
	close(w.wake)
	w.wake = make(chan struct{})
}

func (w *idWatcher) OnX509ContextWatchError(error) {}

func (w *idWatcher) wait(b *testing.B, id spiffeid.ID) {
	deadline := time.After(30 * time.Second)
	for {
		w.mu.Lock()
		_, ok := w.seen[id]
		wake := w.wake
		w.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-wake:
		case <-deadline:
			b.Fatalf("%s never reached the watcher", id)
		}
	}
}
