package inject

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	admissionregv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// clock is a settable clock; the tests that use it run on one goroutine.
type clock struct{ t time.Time }

func (c *clock) Now() time.Time      { return c.t }
func (c *clock) Add(d time.Duration) { c.t = c.t.Add(d) }

// selfSigner signs one-hour certificates with a throwaway CA key, counting
// calls; fail makes it fail.
type selfSigner struct {
	clk   *clock
	key   *ecdsa.PrivateKey
	calls int
	fail  bool
}

func (s *selfSigner) sign(pub crypto.PublicKey) ([]*x509.Certificate, error) {
	s.calls++
	if s.fail {
		return nil, errors.New("ca down")
	}
	now := s.clk.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(s.calls)), Subject: pkix.Name{CommonName: "t"}, NotBefore: now, NotAfter: now.Add(time.Hour), DNSNames: []string{"sigil-server.sigil-system.svc"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, s.key)
	if err != nil {
		return nil, err
	}
	c, err := x509.ParseCertificate(der)
	return []*x509.Certificate{c}, err
}

// TestServingCertRotation: the webhook's certificate is renewed at half of
// its life, not before, and a failed renewal keeps the old one in use.
func TestServingCertRotation(t *testing.T) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	signer := &selfSigner{clk: clk, key: key}
	sc, err := NewServingCert(signer.sign, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	first := sc.Leaf()
	clk.Add(29 * time.Minute)
	if renewed, err := sc.RenewIfDue(); renewed || err != nil || sc.Leaf() != first {
		t.Fatalf("renewed before half-life: %v %v", renewed, err)
	}
	clk.Add(time.Minute)
	signer.fail = true
	if _, err := sc.RenewIfDue(); err == nil || sc.Leaf() != first {
		t.Fatalf("failed renewal: err %v, certificate replaced %v", err, sc.Leaf() != first)
	}
	signer.fail = false
	if renewed, err := sc.RenewIfDue(); !renewed || err != nil || sc.Leaf() == first {
		t.Fatalf("not renewed at half-life: %v %v", renewed, err)
	}
	got, _ := sc.GetCertificate(nil)
	if got.Leaf != sc.Leaf() || len(got.Certificate) != 1 {
		t.Fatal("GetCertificate does not serve the renewed certificate")
	}
	if _, err := NewServingCert(func(crypto.PublicKey) ([]*x509.Certificate, error) { return nil, nil }, clk.Now); err == nil {
		t.Fatal("empty chain accepted")
	}
}

func webhookConfig(hooks ...admissionregv1.MutatingWebhook) *admissionregv1.MutatingWebhookConfiguration {
	return &admissionregv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: DefaultWebhookConfig}, Webhooks: hooks}
}

func serviceHook(name, ns, svc string, bundle []byte) admissionregv1.MutatingWebhook {
	return admissionregv1.MutatingWebhook{Name: name, ClientConfig: admissionregv1.WebhookClientConfig{
		Service: &admissionregv1.ServiceReference{Namespace: ns, Name: svc}, CABundle: bundle}}
}

func urlHook(name string) admissionregv1.MutatingWebhook {
	u := "https://127.0.0.1:8443/inject"
	return admissionregv1.MutatingWebhook{Name: name, ClientConfig: admissionregv1.WebhookClientConfig{URL: &u}}
}

func patches(cs *fake.Clientset) int {
	n := 0
	for _, a := range cs.Actions() {
		if a.GetVerb() == "patch" {
			n++
		}
	}
	return n
}

// TestBundlePatch: the trust bundle lands in the caBundle of the webhooks
// that call this server (by Service in the mesh's namespace, or by URL),
// and nowhere else; an unchanged bundle costs no API call until the
// recheck, which restores a wiped one; a rotated bundle is written at
// once.
func TestBundlePatch(t *testing.T) {
	ctx := context.Background()
	other := []byte("other-ca")
	cs := fake.NewClientset(webhookConfig(
		serviceHook("ns.inject.sigil.dev", "sigil-system", ServiceName, nil),
		serviceHook("someone-else", "sigil-system", "other-svc", other),
		serviceHook("wrong-ns", "default", ServiceName, other),
		urlHook("url.inject.sigil.dev"),
	))
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	p := NewBundlePatcher(cs.AdmissionregistrationV1().MutatingWebhookConfigurations(), DefaultWebhookConfig, "sigil-system", clk.Now)
	get := func() *admissionregv1.MutatingWebhookConfiguration {
		c, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, DefaultWebhookConfig, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	want := func(b1 []byte) {
		t.Helper()
		c := get()
		for i, w := range [][]byte{b1, other, other, b1} {
			if !bytes.Equal(c.Webhooks[i].ClientConfig.CABundle, w) {
				t.Fatalf("webhook %s caBundle %q, want %q", c.Webhooks[i].Name, c.Webhooks[i].ClientConfig.CABundle, w)
			}
		}
	}

	b1 := []byte("-----BEGIN CERTIFICATE-----\nroot1\n-----END CERTIFICATE-----\n")
	if patched, err := p.Sync(ctx, b1); !patched || err != nil {
		t.Fatalf("first sync: %v %v", patched, err)
	}
	want(b1)
	cs.ClearActions()
	if patched, err := p.Sync(ctx, b1); patched || err != nil || len(cs.Actions()) != 0 {
		t.Fatalf("unchanged bundle: patched %v err %v, %d API calls", patched, err, len(cs.Actions()))
	}

	// Something wipes it (kubectl apply of the manifest): restored at the
	// recheck.
	c := get()
	c.Webhooks[0].ClientConfig.CABundle = nil
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, c, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	clk.Add(RecheckEvery)
	cs.ClearActions()
	if patched, err := p.Sync(ctx, b1); !patched || err != nil || patches(cs) != 1 {
		t.Fatalf("recheck: patched %v err %v", patched, err)
	}
	want(b1)

	// The CA publishes a new root: written at once.
	b2 := append(bytes.Clone(b1), []byte("-----BEGIN CERTIFICATE-----\nroot2\n-----END CERTIFICATE-----\n")...)
	if patched, err := p.Sync(ctx, b2); !patched || err != nil {
		t.Fatalf("rotated bundle: %v %v", patched, err)
	}
	want(b2)
}

// TestBundlePatchErrors: a missing configuration, one with no webhook for
// this server, or a refused patch are errors the next tick retries.
func TestBundlePatchErrors(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	b := []byte("bundle")

	missing := NewBundlePatcher(fake.NewClientset().AdmissionregistrationV1().MutatingWebhookConfigurations(), DefaultWebhookConfig, "sigil-system", clk.Now)
	if _, err := missing.Sync(ctx, b); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("missing configuration: %v", err)
	}
	foreign := NewBundlePatcher(fake.NewClientset(webhookConfig(serviceHook("x", "default", "other", nil))).AdmissionregistrationV1().MutatingWebhookConfigurations(), DefaultWebhookConfig, "sigil-system", clk.Now)
	if _, err := foreign.Sync(ctx, b); err == nil || !strings.Contains(err.Error(), "no webhook calls") {
		t.Fatalf("no webhook of ours: %v", err)
	}
	cs := fake.NewClientset(webhookConfig(urlHook("u")))
	cs.PrependReactor("patch", "mutatingwebhookconfigurations", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("conflict")
	})
	refused := NewBundlePatcher(cs.AdmissionregistrationV1().MutatingWebhookConfigurations(), DefaultWebhookConfig, "sigil-system", clk.Now)
	if _, err := refused.Sync(ctx, b); err == nil {
		t.Fatal("refused patch not reported")
	}
	cs.ReactionChain = cs.ReactionChain[1:]
	if patched, err := refused.Sync(ctx, b); !patched || err != nil {
		t.Fatalf("retry after a refused patch: %v %v", patched, err)
	}
	if _, err := refused.Sync(ctx, nil); err == nil {
		t.Fatal("empty bundle accepted")
	}
}
