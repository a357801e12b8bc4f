package kube

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/e2e/harness"
	"github.com/sigil-mesh/sigil/k8s/inject"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestSidecarInjectionWebhook: the API server calls sigil-server's
// injection webhook over TLS (a certificate from Sigil's CA, trusted
// through the caBundle the server wrote into the webhook configuration)
// and stores the Pods it mutates. No kubelet runs, so nothing starts the
// injected containers: the test checks the stored Pod objects. The
// configuration is the one the install manifests ship
// (inject.WebhookConfiguration), calling a URL on loopback instead of the
// Service, since no kube-proxy routes Services here.
func TestSidecarInjectionWebhook(t *testing.T) {
	k := harness.StartKube(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	port := freeLoopbackPort(t)
	url := "https://127.0.0.1:" + port + inject.Path
	cfg := inject.WebhookConfiguration("sigil-system", inject.DefaultWebhookPort)
	for i := range cfg.Webhooks {
		cfg.Webhooks[i].ClientConfig.Service = nil
		cfg.Webhooks[i].ClientConfig.URL = &url
	}
	webhooks := k.Clients.Core.AdmissionregistrationV1().MutatingWebhookConfigurations()
	if _, err := webhooks.Create(ctx, cfg, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	m := harness.StartMesh(t, "--kubernetes", "--kubeconfig", k.Kubeconfig,
		"--webhook-bind", "127.0.0.1:"+port, "--webhook-tls-san", "127.0.0.1", "--inject-proxy-image", "sigil-e2e/sigil:dev",
		// Short-lived certificates, so the serving one is renewed during
		// the test.
		"--default-x509-ttl", "20s")
	m.Server.WaitFor(`"msg":"sidecar injection webhook serving"`, 30*time.Second)
	m.Server.WaitFor(`"msg":"webhook configuration's ca bundle updated"`, 30*time.Second)

	// The caBundle of every webhook is Sigil's trust bundle.
	bundle := []byte(m.Admin("bundle", "show"))
	got, err := webhooks.Get(ctx, inject.DefaultWebhookConfig, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range got.Webhooks {
		if !bytes.Equal(w.ClientConfig.CABundle, bundle) {
			t.Fatalf("webhook %s caBundle:\n%s\nwant Sigil's bundle:\n%s", w.Name, w.ClientConfig.CABundle, bundle)
		}
	}

	first := servingCert(t, "127.0.0.1:"+port, bundle)

	k.Namespace("shop", map[string]string{inject.LabelInject: inject.LabelInjectEnabled})
	k.Namespace("plain", nil)
	k.ServiceAccount("shop", "web")
	k.ServiceAccount("plain", "web")
	pods := func(ns string) interface {
		Create(context.Context, *corev1.Pod, metav1.CreateOptions) (*corev1.Pod, error)
		Get(context.Context, string, metav1.GetOptions) (*corev1.Pod, error)
		Update(context.Context, *corev1.Pod, metav1.UpdateOptions) (*corev1.Pod, error)
	} {
		return k.Clients.Core.CoreV1().Pods(ns)
	}
	create := func(ns, name string, labels, annotations map[string]string) *corev1.Pod {
		t.Helper()
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: annotations},
			Spec: corev1.PodSpec{ServiceAccountName: "web", InitContainers: []corev1.Container{{Name: "migrate", Image: "sigil-e2e/migrate"}},
				Containers: []corev1.Container{{Name: "app", Image: "sigil-e2e/app", Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}}},
		}
		if _, err := pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create pod %s/%s: %v", ns, name, err)
		}
		stored, err := pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return stored
	}
	sidecars := func(p *corev1.Pod) int {
		n := 0
		for _, c := range append(append([]corev1.Container(nil), p.Spec.InitContainers...), p.Spec.Containers...) {
			if c.Name == inject.ProxyContainer {
				n++
			}
		}
		return n
	}
	checkInjected := func(p *corev1.Pod) {
		t.Helper()
		var inits []string
		for _, c := range p.Spec.InitContainers {
			inits = append(inits, c.Name)
		}
		if strings.Join(inits, ",") != "sigil-iptables,sigil-proxy,migrate" {
			t.Fatalf("pod %s/%s init containers %v, want sigil-iptables,sigil-proxy,migrate", p.Namespace, p.Name, inits)
		}
		proxy := p.Spec.InitContainers[1]
		if proxy.RestartPolicy == nil || *proxy.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Fatalf("stored sidecar has restartPolicy %v, want Always (a native sidecar)", proxy.RestartPolicy)
		}
		if proxy.StartupProbe == nil || proxy.StartupProbe.Exec == nil || strings.Join(proxy.StartupProbe.Exec.Command, " ") != "sigil-proxy ready" {
			t.Fatalf("stored sidecar's startup probe %+v", proxy.StartupProbe)
		}
		if !strings.Contains(strings.Join(proxy.Args, " "), "--service web --namespace "+p.Namespace) {
			t.Fatalf("sidecar args %v", proxy.Args)
		}
		if p.Annotations[inject.AnnotationStatus] == "" {
			t.Fatal("no status annotation")
		}
	}

	// Opted in by its namespace.
	web0 := create("shop", "web-0", map[string]string{"app": "web"}, nil)
	checkInjected(web0)

	// A Pod made from an injected Pod's spec, as a controller re-creating
	// it would: the webhook is called again and adds nothing.
	again := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Labels: web0.Labels, Annotations: web0.Annotations}, Spec: *web0.Spec.DeepCopy()}
	again.Spec.NodeName = ""
	if _, err := pods("shop").Create(ctx, again, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	web1, err := pods("shop").Get(ctx, "web-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m.Server.WaitFor(`"msg":"pod not injected".*"pod":"web-1".*"reason":"already injected"`, 10*time.Second)
	if n := sidecars(web1); n != 1 {
		t.Fatalf("re-admitted pod has %d sidecars", n)
	}
	checkInjected(web1)

	// An update does not add a second sidecar.
	web0.Labels["version"] = "v2"
	if _, err := pods("shop").Update(ctx, web0, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if updated, err := pods("shop").Get(ctx, "web-0", metav1.GetOptions{}); err != nil || sidecars(updated) != 1 {
		t.Fatalf("after update: %v, %d sidecars", err, sidecars(updated))
	}

	// Opted out by annotation: stored as sent.
	out := create("shop", "batch-0", map[string]string{"app": "batch"}, map[string]string{inject.AnnotationInject: "false"})
	if len(out.Spec.InitContainers) != 1 || out.Annotations[inject.AnnotationStatus] != "" {
		t.Fatalf("opted-out pod was mutated: %+v", out.Spec.InitContainers)
	}
	m.Server.WaitFor(`"msg":"pod not injected".*"pod":"batch-0".*"reason":"opted out`, 10*time.Second)

	// A namespace without the label: untouched, unless the Pod opts in.
	plain := create("plain", "web-0", map[string]string{"app": "web"}, nil)
	if len(plain.Spec.InitContainers) != 1 {
		t.Fatalf("pod of a namespace not opted in was mutated: %+v", plain.Spec.InitContainers)
	}
	checkInjected(create("plain", "web-1", map[string]string{"app": "web", inject.LabelInject: inject.LabelInjectEnabled}, nil))

	// A Pod the injector refuses is not created (failurePolicy Fail and
	// an explicit refusal), with the reason in the API server's answer.
	bad := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "nameless", Labels: map[string]string{"tier": "x"}},
		Spec: corev1.PodSpec{ServiceAccountName: "web", Containers: []corev1.Container{{Name: "app", Image: "sigil-e2e/app"}}}}
	if _, err := pods("shop").Create(ctx, bad, metav1.CreateOptions{}); err == nil || !strings.Contains(err.Error(), "no service name") {
		t.Fatalf("pod without a service name: %v", err)
	}

	// The server counts what it did: shop/web-0 and plain/web-1 injected;
	// skipped: shop/web-1, batch-0, and the API server's re-invocation
	// (reinvocationPolicy IfNeeded) of each injected Pod, which the
	// injector answers "already injected"; nameless refused.
	resp, err := http.Get(strings.TrimSuffix(m.Dashboard, "/") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	metrics, _ := io.ReadAll(resp.Body)
	for result, n := range map[string]string{"injected": "2", "skipped": "4", "refused": "1"} {
		if !regexp.MustCompile(`(?m)^sigil_server_sidecar_injections_total\{result="` + result + `"\} ` + n + `$`).Match(metrics) {
			t.Errorf("want sigil_server_sidecar_injections_total{result=%q} %s in:\n%s", result, n, grepLines(string(metrics), "sidecar_injections"))
		}
	}

	// The serving certificate is renewed at half-life; the new one chains
	// to the same bundle, and the API server keeps calling the webhook.
	m.Server.WaitFor(`"msg":"webhook serving certificate renewed"`, 30*time.Second)
	if renewed := servingCert(t, "127.0.0.1:"+port, bundle); renewed.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("the webhook still serves its first certificate")
	}
	checkInjected(create("shop", "web-2", map[string]string{"app": "web"}, nil))
}

// servingCert dials the webhook as the API server does (trusting only
// bundle, checking the host name) and returns the certificate it serves,
// after checking it is the server's SVID.
func servingCert(t *testing.T, addr string, bundle []byte) *x509.Certificate {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle) {
		t.Fatal("bundle holds no certificate")
	}
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("webhook TLS, trusting Sigil's bundle: %v", err)
	}
	defer conn.Close()
	leaf := conn.ConnectionState().PeerCertificates[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://"+harness.TrustDomain+"/sigil/server" {
		t.Fatalf("serving certificate's URI SANs %v, want the server's SPIFFE ID", leaf.URIs)
	}
	return leaf
}

// grepLines keeps the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// freeLoopbackPort returns a loopback port free a moment ago.
func freeLoopbackPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}
