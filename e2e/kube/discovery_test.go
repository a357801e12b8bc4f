package kube

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/e2e/harness"
	"github.com/sigil-mesh/sigil/k8s/discovery"
	"github.com/sigil-mesh/sigil/kube"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// shopPolicy lets the shop namespace's workloads call each other.
const shopPolicy = `package sigil.authz

default allow := false

allow if input.source.namespace == "shop"
`

// TestServiceDiscoveryFromEndpointSlices: against the real API server, a
// Service (its ClusterIP allocated by the API server) and EndpointSlices
// naming Pod objects become the endpoints every sidecar routes by: a
// request for the service's name through a caller's sidecar reaches the
// pods' apps, a DestinationRule subset picks pods by their labels, a
// connection the app makes to the ClusterIP:port, captured by iptables,
// is routed to the service (no kube-proxy runs: the caller's namespace
// only has a route for the service range, and the sidecar is what makes
// the ClusterIP answer), the sidecars' own reports do not double the
// pods up, an endpoint whose pod is unknown is left out, and a
// not-ready endpoint goes.
//
// No kubelet or EndpointSlice controller runs: the test creates the Pod
// objects and the EndpointSlices the controller would, and starts each
// pod's app and sidecar itself in network namespaces (the API server
// refuses loopback endpoint addresses): both api pods in one, at
// 10.77.N.2 on ports 15006 and 15007, the caller in another. Identities
// come from join-token agents and entries, as the pods' would from their
// node's agent.
func TestServiceDiscoveryFromEndpointSlices(t *testing.T) {
	clientNS, serverNS, clientIP, serverIP := harness.NetnsPair(t)
	k := harness.StartKube(t)
	m := harness.StartMesh(t, "--kubernetes", "--kubeconfig", k.Kubeconfig)
	m.Server.WaitFor(`"msg":"kubernetes part started".*"part":"services"`, 60*time.Second)

	dir := filepath.Join(m.Dir, "policy")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authz.rego"), []byte(shopPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	uid := strconv.Itoa(os.Getuid())
	sidecar := func(netns, node, sa, app string, ports int, extra ...string) {
		m.Entry(node, "spiffe://"+harness.TrustDomain+"/ns/shop/sa/"+sa, "--selector", "unix:uid:"+uid)
		agent := m.StartAgent(node)
		appAddr := "127.0.0.1:" + strconv.Itoa(8080+ports)
		harness.StartIn(t, netns, "sigil-demo-app", "--listen", appAddr, "--name", app).WaitFor(`listening on`, 30*time.Second)
		harness.StartIn(t, netns, "sigil-proxy", append([]string{"run", "--socket", agent.Socket, "--service", sa, "--app", appAddr, "--policy", dir,
			"--outbound", "127.0.0.1:" + strconv.Itoa(15001+ports), "--admin", "127.0.0.1:" + strconv.Itoa(15000+ports),
			// Its own spool: the default one is per service and port, which
			// other tests' sidecars in other namespaces may hold.
			"--audit-spool-dir", filepath.Join(m.Dir, "spool-"+node)}, extra...)...).
			WaitFor(`sigil-proxy running`, 60*time.Second)
	}
	v1, v2 := serverIP+":15006", serverIP+":15007"
	sidecar(serverNS, "n-api-v1", "api", "api-v1", 0, "--inbound", v1, "--label", "version=v1")
	sidecar(serverNS, "n-api-v2", "api", "api-v2", 10, "--inbound", v2, "--label", "version=v2")
	sidecar(clientNS, "n-web", "web", "web", 0, "--inbound", clientIP+":15006", "--transparent")
	// Istio-style capture, excluding the sidecar's own uid (0 here); and a
	// route for the service range, as a pod's default route would be.
	if out, err := exec.Command("ip", "netns", "exec", clientNS, harness.Bin("sigil-proxy"), "iptables", "--proxy-uid", "0").CombinedOutput(); err != nil {
		t.Fatalf("iptables: %v: %s", err, out)
	}
	if out, err := exec.Command("ip", "-n", clientNS, "route", "add", k.ServiceCIDR, "via", serverIP).CombinedOutput(); err != nil {
		t.Fatalf("route: %v: %s", err, out)
	}
	c := &caller{t: t, netns: clientNS}

	k.Namespace("shop", nil)
	k.ServiceAccount("shop", "api")
	pod1 := k.Pod("shop", "api-v1", "api", "n-api-v1", map[string]string{"app": "api", "version": "v1"})
	pod2 := k.Pod("shop", "api-v2", "api", "n-api-v2", map[string]string{"app": "api", "version": "v2"})
	ctx := context.Background()
	svc, err := k.Clients.Core.CoreV1().Services("shop").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "shop"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		t.Fatalf("the API server allocated no ClusterIP: %q", svc.Spec.ClusterIP)
	}
	// One slice per pod: their sidecars listen on different ports, as
	// the controller splits a named targetPort that resolves differently.
	slices := k.Clients.Core.DiscoveryV1().EndpointSlices("shop")
	sliceOf := func(name string, pod *corev1.Pod, inbound string, extra ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
		host, port := splitHostPort(t, inbound)
		s := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: "shop", Labels: map[string]string{discoveryv1.LabelServiceName: "api", discoveryv1.LabelManagedBy: "e2e"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(port)), Protocol: ptr(corev1.ProtocolTCP)}},
			Endpoints: append([]discoveryv1.Endpoint{{Addresses: []string{host}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: pod.Name, UID: pod.UID}}}, extra...),
		}
		out, err := slices.Create(ctx, s, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	// An endpoint of a pod the API server does not have: no identity it
	// could be held to, so it is left out.
	ghost := discoveryv1.Endpoint{Addresses: []string{strings.TrimSuffix(serverIP, ".2") + ".9"}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: "ghost"}}
	sliceOf("api-v1", pod1, v1, ghost)
	s2 := sliceOf("api-v2", pod2, v2)

	vip := svc.Spec.ClusterIP + ":80"
	cfg := c.waitConfig(func(c proxyConfig) bool { return len(c.Endpoints["api.shop"]) == 2 && c.ClusterIPs[vip] == "api.shop" })
	for _, e := range cfg.Endpoints["api.shop"] {
		if e.SPIFFEID != "spiffe://"+harness.TrustDomain+"/ns/shop/sa/api" || e.ServicePort != 80 || e.Labels["app"] != "api" {
			t.Errorf("endpoint %+v: want identity ns/shop/sa/api (the pod's service account), service port 80, the pod's labels", e)
		}
		if e.Address != v1 && e.Address != v2 {
			t.Errorf("endpoint %s is not an EndpointSlice's (%s, %s): the sidecars' own reports must not double the pods up", e.Address, v1, v2)
		}
	}

	// By name through the sidecar (explicit): both pods answer (the
	// balancer tries an endpoint it has not measured yet).
	seen := map[string]int{}
	for range 20 {
		seen[c.call("name", "")]++
	}
	if seen["api-v1"] == 0 || seen["api-v2"] == 0 || len(seen) != 2 {
		t.Fatalf("requests for api by name reached %v, want both pods' apps", seen)
	}
	// By ClusterIP:80 (captured): the pods answer (which one is the
	// peak-EWMA balancer's choice).
	for range 10 {
		if got := c.call("clusterip", svc.Spec.ClusterIP); got != "api-v1" && got != "api-v2" {
			t.Fatalf("request to the ClusterIP %s answered by %q, want an api pod", vip, got)
		}
	}

	// A pod's own address (what a headless Service's DNS gives; no
	// Service here has that address as its ClusterIP): the connection
	// goes to that pod, not to any of the service's.
	for _, pod := range []struct{ addr, app string }{{v1, "api-v1"}, {v2, "api-v2"}} {
		for range 5 {
			if got := c.call("address", pod.addr); got != pod.app {
				t.Fatalf("request to pod address %s answered by %q, want %s", pod.addr, got, pod.app)
			}
		}
	}

	// A DestinationRule subset by the pods' labels.
	rules := filepath.Join(m.Dir, "rules.yaml")
	if err := os.WriteFile(rules, []byte(subsetRules), 0o644); err != nil {
		t.Fatal(err)
	}
	harness.MustRun(t, "sigil", "apply", "-f", rules, "--admin-socket", adminv1.AdminSocket(m.DataDir))
	waitFor(t, "the subset route", func() bool { return c.call("name", "") == "api-v2" })
	for _, target := range []string{"name", "clusterip"} {
		for range 10 {
			if got := c.call(target, svc.Spec.ClusterIP); got != "api-v2" {
				t.Fatalf("by %s: subset v2 (version=v2) answered by %q", target, got)
			}
		}
	}

	serverFirst(t, k, m, c, serverNS, serverIP, dir)

	// api-v2 turns not ready: its endpoint goes.
	s2.Endpoints[0].Conditions.Ready = ptr(false)
	if _, err := slices.Update(ctx, s2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.waitConfig(func(c proxyConfig) bool {
		return len(c.Endpoints["api.shop"]) == 1 && c.Endpoints["api.shop"][0].Address == v1
	})

	// The Service goes: so do its endpoints and its ClusterIP; the
	// sidecars' own reports of api count again (plain-host behaviour).
	if err := k.Clients.Core.CoreV1().Services("shop").Delete(ctx, "api", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c.waitConfig(func(c proxyConfig) bool {
		_, has := c.ClusterIPs[vip]
		return !has && len(c.Endpoints["api.shop"]) == 2 && c.Endpoints["api.shop"][0].ServicePort == 0
	})
}

// serverFirst: a server-first protocol (the server speaks first, as
// MySQL's greeting) on a port its Service declares opaque TCP by name
// (tcp-db): the caller's sidecar tunnels the captured connection at once.
// Detecting the protocol instead would wait 5 s for the app's first
// bytes, which never come; the client here gives up after 3.
func serverFirst(t *testing.T, k *harness.Kube, m *harness.Mesh, c *caller, serverNS, serverIP, policy string) {
	const greeter = "import socket\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n" +
		"s.bind(('127.0.0.1', 5432))\ns.listen()\nprint('listening', flush=True)\n" +
		"while True:\n    conn, _ = s.accept()\n    conn.sendall(b'HELLO\\n')\n    conn.close()\n"
	harness.StartCmd(t, "greeter", exec.Command("ip", "netns", "exec", serverNS, "/usr/bin/python3", "-u", "-c", greeter)).WaitFor(`listening`, 30*time.Second)
	m.Entry("n-db", "spiffe://"+harness.TrustDomain+"/ns/shop/sa/db", "--selector", "unix:uid:"+strconv.Itoa(os.Getuid()))
	agent := m.StartAgent("n-db")
	inbound := serverIP + ":15008"
	harness.StartIn(t, serverNS, "sigil-proxy", "run", "--socket", agent.Socket, "--service", "db", "--app", "127.0.0.1:5432", "--policy", policy,
		"--inbound", inbound, "--outbound", "127.0.0.1:15021", "--admin", "127.0.0.1:15020", "--audit-spool-dir", filepath.Join(m.Dir, "spool-n-db")).
		WaitFor(`sigil-proxy running`, 60*time.Second)

	ctx := context.Background()
	k.ServiceAccount("shop", "db")
	pod := k.Pod("shop", "db-0", "db", "n-db", map[string]string{"app": "db"})
	svc, err := k.Clients.Core.CoreV1().Services("shop").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "shop"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "tcp-db", Port: 5432, TargetPort: intstr.FromInt32(15008)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Clients.Core.DiscoveryV1().EndpointSlices("shop").Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "db", Namespace: "shop", Labels: map[string]string{discoveryv1.LabelServiceName: "db", discoveryv1.LabelManagedBy: "e2e"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("tcp-db"), Port: ptr(int32(15008))}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{serverIP},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: pod.Name, UID: pod.UID}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	vip := svc.Spec.ClusterIP + ":5432"
	c.waitConfig(func(cfg proxyConfig) bool { return cfg.ClusterIPs[vip] == "db.shop" })
	start := time.Now()
	out, err := exec.Command("ip", "netns", "exec", c.netns, "setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
		"bash", "-c", "exec 3<>/dev/tcp/"+svc.Spec.ClusterIP+"/5432 && timeout 3 head -c 6 <&3").CombinedOutput()
	if err != nil || string(out) != "HELLO\n" {
		t.Fatalf("server-first protocol through the ClusterIP %s: %q, %v after %v; want the greeting at once", vip, out, err, time.Since(start))
	}
}

// subsetRules send every request for api to its pods labelled version=v2.
const subsetRules = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: shop}
spec:
  host: api
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: shop}
spec:
  hosts: [api]
  http:
  - route:
    - destination: {host: api, subset: v2}
`

// TestServiceDiscoveryRBAC: the discovery part needs list and watch on
// services, endpointslices and pods, and nothing more; without them it
// does not sync and says which informer it waited for.
func TestServiceDiscoveryRBAC(t *testing.T) {
	k := harness.StartKube(t)
	k.Namespace("sigil-system", nil)
	k.ServiceAccount("sigil-system", "sigil-server")
	start := func() error {
		clients, err := harness.KubeconfigClients(k.KubeconfigFor("sigil-system", "sigil-server"))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		factory := kube.NewInformers(clients.Core)
		defer factory.Shutdown()
		defer cancel()
		return discovery.New(factory, discovery.Options{TrustDomain: spiffeid.RequireTrustDomainFromString(harness.TrustDomain), SyncTimeout: 5 * time.Second}).Start(ctx)
	}
	if err := start(); err == nil || !strings.Contains(err.Error(), "listing services") || !strings.Contains(err.Error(), "RBAC") {
		t.Fatalf("without RBAC: %v, want the services informer named, not synced", err)
	}
	k.Apply(`apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: sigil-server-discovery}
rules:
- {apiGroups: [""], resources: [services, pods], verbs: [list, watch]}
- {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: sigil-server-discovery}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: sigil-server-discovery}
subjects: [{kind: ServiceAccount, name: sigil-server, namespace: sigil-system}]
`)
	// RBAC reaches the authorizer's cache within a moment.
	harness.Eventually(t, "discovery with its ClusterRole", 30*time.Second, start)
}

// proxyConfig is what a sidecar's /config says of discovery.
type proxyConfig struct {
	Endpoints map[string][]struct {
		Address     string            `json:"address"`
		SPIFFEID    string            `json:"spiffe_id"`
		Labels      map[string]string `json:"labels"`
		ServicePort uint32            `json:"service_port"`
	} `json:"endpoints"`
	ClusterIPs map[string]string `json:"cluster_ips"`
}

// caller runs curl in the caller's network namespace.
type caller struct {
	t     *testing.T
	netns string
}

// curl runs curl in the namespace, as uid (root's traffic is the
// sidecar's own and is not captured; 65534's is), and returns the body
// and whether the status was 200.
func (c *caller) curl(uid string, args ...string) (string, bool) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", c.netns, "setpriv", "--reuid", uid, "--regid", uid, "--clear-groups",
		"curl", "-sS", "-m", "20", "-w", "\n%{http_code}"}, args...)...).CombinedOutput()
	text := strings.TrimSpace(string(out))
	i := strings.LastIndexByte(text, '\n')
	body, code := "", text[i+1:]
	if i >= 0 {
		body = text[:i]
	}
	return body, err == nil && code == "200"
}

// call asks api for / by name through the sidecar's outbound listener
// (explicit), or at addr (a ClusterIP, or IP:PORT; captured), and returns
// the name of the app that answered (sigil-demo-app's "service"), "" on
// any failure.
func (c *caller) call(by, addr string) string {
	args := []string{"0", "-x", "http://127.0.0.1:15001", "http://api/"}
	if by != "name" {
		args = []string{"65534", "http://" + addr + "/"}
	}
	body, ok := c.curl(args[0], args[1:]...)
	var r struct {
		Service string `json:"service"`
	}
	if !ok || json.Unmarshal([]byte(body), &r) != nil {
		return ""
	}
	return r.Service
}

// waitConfig polls the caller's sidecar's /config until ok (the sidecar
// has no push a test can await from outside) and returns it.
func (c *caller) waitConfig(ok func(proxyConfig) bool) proxyConfig {
	c.t.Helper()
	var cfg proxyConfig
	waitFor(c.t, "sidecar config", func() bool {
		body, got := c.curl("0", "http://127.0.0.1:15000/config")
		cfg = proxyConfig{}
		return got && json.Unmarshal([]byte(body), &cfg) == nil && ok(cfg)
	})
	return cfg
}

// waitFor is harness.Eventually within 30 s, of a condition.
func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	harness.Eventually(t, what, 30*time.Second, func() error {
		if !ok() {
			return errors.New("condition false")
		}
		return nil
	})
}

func splitHostPort(t *testing.T, addr string) (string, int) {
	t.Helper()
	host, p, err := net.SplitHostPort(addr)
	port, perr := strconv.Atoi(p)
	if err != nil || perr != nil {
		t.Fatalf("bad address %q", addr)
	}
	return host, port
}

func ptr[T any](v T) *T { return &v }
