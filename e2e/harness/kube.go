package harness

// A real Kubernetes API server for the e2e suite: etcd and kube-apiserver
// built from the module proxy by tools/kube/build.sh, started on loopback
// with certificates made here. No scheduler, controller manager or kubelet
// runs: tests create the objects those would (Pods bound to a node, their
// status) and start the processes a pod would run themselves.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/kube"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// KubeVersion is the Kubernetes release the suite runs.
const KubeVersion = "v1.37.2"

// KubeBinDir is where tools/kube/build.sh puts kube-apiserver, kubectl and
// etcd: $SIGIL_KUBE_BIN, else ~/.cache/sigil-kube/<KubeVersion>.
func KubeBinDir() string {
	if d := os.Getenv("SIGIL_KUBE_BIN"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "sigil-kube", KubeVersion)
}

// Kube is a running etcd and kube-apiserver.
type Kube struct {
	t testing.TB
	// URL is the API server's https://127.0.0.1:PORT.
	URL string
	// Kubeconfig is an admin kubeconfig file (group system:masters).
	Kubeconfig string
	// Clients are client-go clients as that admin.
	Clients *kube.Clients
	// ServiceCIDR is the range ClusterIPs are allocated from.
	ServiceCIDR string

	dir   string
	caPEM []byte
}

// ServiceCIDR is --service-cluster-ip-range of every test API server.
const serviceCIDR = "10.96.0.0/16"

// StartKube starts etcd and kube-apiserver on free loopback ports and
// waits until the API server's /readyz answers ok. It skips the test,
// saying why, when the binaries are not built.
func StartKube(t testing.TB) *Kube {
	t.Helper()
	k := StartKubeBare(t)
	// Sigil's namespace exists wherever sigil-server runs (it runs in it):
	// the server publishes its trust bundle, and keeps its CA Secret and
	// leader Lease, there.
	k.Namespace(kube.DefaultNamespace, nil)
	return k
}

// StartKubeBare is StartKube without Sigil's namespace: a cluster Sigil
// was never installed in (what `sigil check --pre` expects).
func StartKubeBare(t testing.TB) *Kube {
	t.Helper()
	bin := KubeBinDir()
	for _, b := range []string{"etcd", "kube-apiserver", "kubectl"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			t.Skipf("SKIPPED: no %s in %s: `make kube-tools` builds kube-apiserver, kubectl %s and etcd there (about 6 minutes the first time)", b, bin, KubeVersion)
		}
	}
	dir := t.TempDir()
	k := &Kube{t: t, dir: dir, ServiceCIDR: serviceCIDR}

	etcdClient, etcdPeer := freePort(t), freePort(t)
	etcdURL := "http://127.0.0.1:" + etcdClient
	peerURL := "http://127.0.0.1:" + etcdPeer
	etcd := StartCmd(t, "etcd", exec.Command(filepath.Join(bin, "etcd"),
		"--data-dir", filepath.Join(dir, "etcd"), "--name", "e2e",
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "e2e="+peerURL, "--log-level", "warn"))
	waitHTTP(t, &http.Client{Timeout: 2 * time.Second}, etcdURL+"/health", 60*time.Second, etcd)

	pki := k.writePKI()
	port := freePort(t)
	k.URL = "https://127.0.0.1:" + port
	apiserver := StartCmd(t, "kube-apiserver", exec.Command(filepath.Join(bin, "kube-apiserver"),
		"--etcd-servers", etcdURL,
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", port,
		"--tls-cert-file", pki["serving.crt"], "--tls-private-key-file", pki["serving.key"],
		"--client-ca-file", pki["ca.crt"],
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", pki["sa.pub"], "--service-account-signing-key-file", pki["sa.key"],
		"--service-cluster-ip-range", serviceCIDR,
		"--authorization-mode", "RBAC",
		"--allow-privileged=true",
		// No "kubernetes" Service endpoints: the reconciler refuses loopback.
		"--endpoint-reconciler-type", "none",
		// Webhooks and aggregated APIs referenced by Service are dialled at
		// their endpoints' addresses, never through DNS: the suite stays on
		// loopback.
		"--enable-aggregator-routing=true",
		"--profiling=false",
		"--cert-dir", filepath.Join(dir, "apiserver-certs"),
		"-v", "0"))
	k.Kubeconfig = filepath.Join(dir, "admin.kubeconfig")
	k.writeKubeconfig(k.Kubeconfig, "admin", pki["admin.crt"], pki["admin.key"], "")
	cert, err := tls.LoadX509KeyPair(pki["admin.crt"], pki["admin.key"])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(k.caPEM)
	admin := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}
	waitHTTP(t, admin, k.URL+"/readyz", 120*time.Second, apiserver)
	k.Clients, err = kube.Connect(kube.Options{Kubeconfig: k.Kubeconfig, UserAgent: "sigil-e2e"})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// freePort returns a loopback port free a moment ago.
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// waitHTTP polls url until it answers 200: etcd and kube-apiserver print
// no single line that says they serve, /health and /readyz do.
func waitHTTP(t testing.TB, c *http.Client, url string, timeout time.Duration, p *Proc) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			t.Fatalf("%s exited while starting:\n%s", p.name, tail(p.Output(), 40))
		default:
		}
		resp, err := c.Get(url)
		if err == nil {
			body := make([]byte, 512)
			n, _ := resp.Body.Read(body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, body[:n])
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: %s not ready within %s (last: %s):\n%s", p.name, url, timeout, last, tail(p.Output(), 40))
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// writePKI makes the cluster CA, the API server's serving certificate,
// the admin's client certificate and the service-account signing key, and
// returns their paths by name.
func (k *Kube) writePKI() map[string]string {
	t := k.t
	t.Helper()
	paths := map[string]string{}
	write := func(name string, pemType string, der []byte) {
		p := filepath.Join(k.dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		paths[name] = p
	}
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	keyDER := func(k *ecdsa.PrivateKey) []byte {
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	now := time.Now()
	caKey := key()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sigil-e2e-kubernetes-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	write("ca.crt", "CERTIFICATE", caDER)
	k.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	leaf := func(name string, tmpl *x509.Certificate) {
		lk := key()
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, lk.Public(), caKey)
		if err != nil {
			t.Fatal(err)
		}
		write(name+".crt", "CERTIFICATE", der)
		write(name+".key", "EC PRIVATE KEY", keyDER(lk))
	}
	leaf("serving", &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.ParseIP("10.96.0.1")},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}})
	leaf("admin", &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "sigil-e2e-admin", Organization: []string{"system:masters"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		KeyUsage: x509.KeyUsageDigitalSignature})
	saKey := key()
	write("sa.key", "EC PRIVATE KEY", keyDER(saKey))
	pub, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	write("sa.pub", "PUBLIC KEY", pub)
	return paths
}

// writeKubeconfig writes a kubeconfig for user: with a client certificate
// (certFile, keyFile) or a bearer token.
func (k *Kube) writeKubeconfig(path, user, certFile, keyFile, token string) {
	k.t.Helper()
	b64 := func(p string) string {
		data, err := os.ReadFile(p)
		if err != nil {
			k.t.Fatal(err)
		}
		return base64.StdEncoding.EncodeToString(data)
	}
	var cred string
	if token != "" {
		cred = "    token: " + token + "\n"
	} else {
		cred = "    client-certificate-data: " + b64(certFile) + "\n    client-key-data: " + b64(keyFile) + "\n"
	}
	cfg := "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: " + k.URL +
		"\n    certificate-authority-data: " + base64.StdEncoding.EncodeToString(k.caPEM) +
		"\nusers:\n- name: " + user + "\n  user:\n" + cred +
		"contexts:\n- name: e2e\n  context:\n    cluster: e2e\n    user: " + user + "\ncurrent-context: e2e\n"
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		k.t.Fatal(err)
	}
}

// CAPEM is the cluster CA's certificate, PEM.
func (k *Kube) CAPEM() []byte { return k.caPEM }

// Kubectl runs kubectl as the admin and returns its standard output; a
// failure fails the test with kubectl's standard error.
func (k *Kube) Kubectl(args ...string) string {
	k.t.Helper()
	out, err := k.KubectlStdin(nil, args...)
	if err != nil {
		k.t.Fatalf("kubectl %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// KubectlStdin runs kubectl as the admin with stdin and returns its
// standard output, or an error carrying its standard error.
func (k *Kube) KubectlStdin(stdin []byte, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(KubeBinDir(), "kubectl"), append([]string{"--kubeconfig", k.Kubeconfig}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Apply runs kubectl apply -f - with yaml.
func (k *Kube) Apply(yaml string) string {
	k.t.Helper()
	out, err := k.KubectlStdin([]byte(yaml), "apply", "-f", "-")
	if err != nil {
		k.t.Fatalf("kubectl apply: %v\n%s", err, yaml)
	}
	return out
}

func (k *Kube) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	k.t.Cleanup(cancel)
	return ctx
}

// Namespace creates namespace name (with labels) unless it exists.
func (k *Kube) Namespace(name string, labels map[string]string) {
	k.t.Helper()
	_, err := k.Clients.Core.CoreV1().Namespaces().Create(k.ctx(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		k.t.Fatal(err)
	}
}

// ServiceAccount creates namespace ns (if needed) and service account
// name in it (if needed). No controller manager runs, so even "default"
// does not exist until a test makes it.
func (k *Kube) ServiceAccount(ns, name string) {
	k.t.Helper()
	k.Namespace(ns, nil)
	_, err := k.Clients.Core.CoreV1().ServiceAccounts(ns).Create(k.ctx(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		k.t.Fatal(err)
	}
}

// Pod creates a Pod running as service account sa (made if missing),
// bound to node, with labels and one container "app", and marks it
// Running and Ready with pod IP 127.0.0.1 — what the scheduler and the
// kubelet would do, neither of which runs here.
func (k *Kube) Pod(ns, name, sa, node string, labels map[string]string) *corev1.Pod {
	k.t.Helper()
	k.ServiceAccount(ns, sa)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa, NodeName: node,
			Containers: []corev1.Container{{Name: "app", Image: "sigil-e2e/app"}},
		},
	}
	created, err := k.Clients.Core.CoreV1().Pods(ns).Create(k.ctx(), pod, metav1.CreateOptions{})
	if err != nil {
		k.t.Fatalf("create pod %s/%s: %v", ns, name, err)
	}
	now := metav1.Now()
	created.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: "127.0.0.1", PodIPs: []corev1.PodIP{{IP: "127.0.0.1"}}, HostIP: "127.0.0.1", StartTime: &now,
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now}},
	}
	updated, err := k.Clients.Core.CoreV1().Pods(ns).UpdateStatus(k.ctx(), created, metav1.UpdateOptions{})
	if err != nil {
		k.t.Fatalf("pod %s/%s status: %v", ns, name, err)
	}
	return updated
}

// Token returns a service-account token of ns/sa for audience from the
// TokenRequest API, valid an hour, bound to pod when pod is not nil (as
// the kubelet's projected tokens are).
func (k *Kube) Token(ns, sa, audience string, pod *corev1.Pod) string {
	k.t.Helper()
	exp := int64(3600)
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}
	if audience != "" {
		req.Spec.Audiences = []string{audience}
	}
	if pod != nil {
		req.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	}
	resp, err := k.Clients.Core.CoreV1().ServiceAccounts(ns).CreateToken(k.ctx(), sa, req, metav1.CreateOptions{})
	if err != nil {
		k.t.Fatalf("token for %s/%s: %v", ns, sa, err)
	}
	return resp.Status.Token
}

// TokenFile writes Token(ns, sa, audience, pod) to a new 0600 file and
// returns its path.
func (k *Kube) TokenFile(ns, sa, audience string, pod *corev1.Pod) string {
	k.t.Helper()
	f, err := os.CreateTemp(k.dir, "token-")
	if err != nil {
		k.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(k.Token(ns, sa, audience, pod)); err != nil {
		k.t.Fatal(err)
	}
	return f.Name()
}

// KubeconfigFor writes a kubeconfig that authenticates as service account
// ns/sa (an hour's token for the API server), so a daemon runs with only
// what RBAC grants that account, and returns its path.
func (k *Kube) KubeconfigFor(ns, sa string) string {
	k.t.Helper()
	k.ServiceAccount(ns, sa)
	path := filepath.Join(k.dir, ns+"-"+sa+".kubeconfig")
	k.writeKubeconfig(path, ns+"-"+sa, "", "", k.Token(ns, sa, "", nil))
	return path
}

// KubeconfigClients connects to the API server with a kubeconfig file.
func KubeconfigClients(path string) (*kube.Clients, error) {
	return kube.Connect(kube.Options{Kubeconfig: path, UserAgent: "sigil-e2e"})
}
