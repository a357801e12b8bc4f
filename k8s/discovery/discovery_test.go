package discovery

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/kube"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func service(ns, name string, clusterIP string, ports ...corev1.ServicePort) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{ClusterIP: clusterIP, Ports: ports}}
	if clusterIP != "" {
		s.Spec.ClusterIPs = []string{clusterIP}
	}
	return s
}

func port(name string, p int32) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: p, Protocol: corev1.ProtocolTCP}
}

func pod(ns, name, uid, sa string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid), Labels: labels}, Spec: corev1.PodSpec{ServiceAccountName: sa}}
}

type sliceEP struct {
	ip, pod, uid string
	ready        *bool
}

func slice(ns, name, svc string, ports map[string]int32, eps ...sliceEP) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4}
	for n, p := range ports {
		s.Ports = append(s.Ports, discoveryv1.EndpointPort{Name: &n, Port: &p})
	}
	for _, e := range eps {
		ep := discoveryv1.Endpoint{Addresses: []string{e.ip}, Conditions: discoveryv1.EndpointConditions{Ready: e.ready}}
		if e.pod != "" {
			ep.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: e.pod, UID: types.UID(e.uid)}
		}
		s.Endpoints = append(s.Endpoints, ep)
	}
	return s
}

func id(ns, sa string) spiffeid.ID {
	v, _ := naming.WorkloadID(td, ns, sa)
	return v
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

var no = new(bool)

// TestServiceDiscoveryEndpoints: a Service, its slices and its pods make
// endpoints at pod IP:targetPort with the pod's labels and the identity
// of its service account; what cannot be held to an identity is left out.
func TestServiceDiscoveryEndpoints(t *testing.T) {
	api := naming.Service{Name: "api", Namespace: "shop"}
	v1 := pod("shop", "api-1", "u1", "api-sa", map[string]string{"version": "v1"})
	v2 := pod("shop", "api-2", "u2", "", map[string]string{"version": "v2"})
	other := pod("prod", "api-3", "u3", "api-sa", nil)
	pods := map[string]*corev1.Pod{"shop/api-1": v1, "shop/api-2": v2, "prod/api-3": other}
	lookup := func(ns, name string) *corev1.Pod { return pods[ns+"/"+name] }
	tests := []struct {
		name    string
		svc     *corev1.Service
		slices  []*discoveryv1.EndpointSlice
		want    []Endpoint
		dropped int
	}{{
		name:   "ready endpoints with labels and identity",
		svc:    service("shop", "api", "10.96.0.10", port("", 80)),
		slices: []*discoveryv1.EndpointSlice{slice("shop", "api-a", "api", map[string]int32{"": 8080}, sliceEP{ip: "10.0.0.2", pod: "api-2", uid: "u2"}, sliceEP{ip: "10.0.0.1", pod: "api-1"})},
		want: []Endpoint{
			{Service: api, Address: ap("10.0.0.1:8080"), ServicePort: 80, ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10")}, Identity: id("shop", "api-sa"), Labels: map[string]string{"version": "v1"}},
			{Service: api, Address: ap("10.0.0.2:8080"), ServicePort: 80, ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10")}, Identity: id("shop", "default"), Labels: map[string]string{"version": "v2"}},
		},
	}, {
		name:   "not ready dropped",
		svc:    service("shop", "api", "10.96.0.10", port("", 80)),
		slices: []*discoveryv1.EndpointSlice{slice("shop", "api-a", "api", map[string]int32{"": 8080}, sliceEP{ip: "10.0.0.1", pod: "api-1", ready: no})},
	}, {
		name: "unknown pod, stale uid, other namespace: left out",
		svc:  service("shop", "api", "10.96.0.10", port("", 80)),
		slices: []*discoveryv1.EndpointSlice{slice("shop", "api-a", "api", map[string]int32{"": 8080},
			sliceEP{ip: "10.0.0.1"}, sliceEP{ip: "10.0.0.2", pod: "gone"}, sliceEP{ip: "10.0.0.3", pod: "api-1", uid: "old"})},
		dropped: 3,
	}, {
		name:    "pod of another namespace",
		svc:     service("shop", "api", "10.96.0.10", port("", 80)),
		slices:  []*discoveryv1.EndpointSlice{withRefNamespace(slice("shop", "api-a", "api", map[string]int32{"": 8080}, sliceEP{ip: "10.0.0.3", pod: "api-3"}), "prod")},
		dropped: 1,
	}, {
		name:   "headless: no cluster IPs",
		svc:    service("shop", "api", corev1.ClusterIPNone, port("web", 8080)),
		slices: []*discoveryv1.EndpointSlice{slice("shop", "api-a", "api", map[string]int32{"web": 8080}, sliceEP{ip: "10.0.0.1", pod: "api-1"})},
		want:   []Endpoint{{Service: api, Address: ap("10.0.0.1:8080"), ServicePort: 8080, Identity: id("shop", "api-sa"), Labels: map[string]string{"version": "v1"}}},
	}, {
		name:   "ports matched by name; unknown port names skipped",
		svc:    service("shop", "api", "10.96.0.10", port("http", 80), port("grpc", 9090)),
		slices: []*discoveryv1.EndpointSlice{slice("shop", "api-a", "api", map[string]int32{"http": 8080, "grpc": 9091, "metrics": 9100}, sliceEP{ip: "10.0.0.1", pod: "api-1"})},
		want: []Endpoint{
			{Service: api, Address: ap("10.0.0.1:8080"), ServicePort: 80, Protocol: "http", ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10")}, Identity: id("shop", "api-sa"), Labels: map[string]string{"version": "v1"}},
			{Service: api, Address: ap("10.0.0.1:9091"), ServicePort: 9090, Protocol: "http", ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10")}, Identity: id("shop", "api-sa"), Labels: map[string]string{"version": "v1"}},
		},
	}, {
		name:   "ExternalName: nothing",
		svc:    &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "api"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.com"}},
		slices: []*discoveryv1.EndpointSlice{slice("shop", "api-a", "api", map[string]int32{"": 8080}, sliceEP{ip: "10.0.0.1", pod: "api-1"})},
	}, {
		name:   "FQDN slice skipped",
		svc:    service("shop", "api", "10.96.0.10", port("", 80)),
		slices: []*discoveryv1.EndpointSlice{withType(slice("shop", "api-a", "api", map[string]int32{"": 8080}, sliceEP{ip: "10.0.0.1", pod: "api-1"}), discoveryv1.AddressTypeFQDN)},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, dropped := build(td, tc.svc, tc.slices, lookup)
			if !sameEndpoints(got, tc.want) || dropped != tc.dropped {
				t.Errorf("got %+v dropped %d\nwant %+v dropped %d", got, dropped, tc.want, tc.dropped)
			}
		})
	}
}

func withType(s *discoveryv1.EndpointSlice, t discoveryv1.AddressType) *discoveryv1.EndpointSlice {
	s.AddressType = t
	return s
}

func withRefNamespace(s *discoveryv1.EndpointSlice, ns string) *discoveryv1.EndpointSlice {
	for _, ep := range s.Endpoints {
		ep.TargetRef.Namespace = ns
	}
	return s
}

// TestServiceDiscoveryWatch follows Services, slices and pods on the fake
// API server: adds, a label change, a slice update and delete, a Service
// delete each move the State.
func TestServiceDiscoveryWatch(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	client := fake.NewClientset(
		service("shop", "api", "10.96.0.10", port("", 80)),
		pod("shop", "api-1", "u1", "api-sa", map[string]string{"version": "v1"}),
		slice("shop", "api-a", "api", map[string]int32{"": 8080}, sliceEP{ip: "10.0.0.1", pod: "api-1", uid: "u1"}),
	)
	changed := make(chan struct{}, 100)
	factory := kube.NewInformers(client)
	defer factory.Shutdown()
	defer cancel()
	w := New(factory, Options{TrustDomain: td, OnChange: func() { changed <- struct{}{} }})
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	api := naming.Service{Name: "api", Namespace: "shop"}
	expect := func(what string, ok func(*State) bool) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for !ok(w.State()) {
			select {
			case <-changed:
			case <-deadline:
				t.Fatalf("%s: state %+v", what, w.State().Services)
			}
		}
	}
	expect("initial", func(s *State) bool {
		eps := s.Services[api]
		return len(eps) == 1 && eps[0].Labels["version"] == "v1" && eps[0].Identity == id("shop", "api-sa") && s.Revision > 0
	})
	sl := client.DiscoveryV1().EndpointSlices("shop")
	pods := client.CoreV1().Pods("shop")

	// A second pod appears, then its endpoint in the slice.
	if _, err := pods.Create(ctx, pod("shop", "api-2", "u2", "api-sa", map[string]string{"version": "v2"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	two := slice("shop", "api-a", "api", map[string]int32{"": 8080}, sliceEP{ip: "10.0.0.1", pod: "api-1", uid: "u1"}, sliceEP{ip: "10.0.0.2", pod: "api-2", uid: "u2"})
	if _, err := sl.Update(ctx, two, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	expect("slice update", func(s *State) bool { return len(s.Services[api]) == 2 })

	// A pod's labels move: its endpoint follows (subsets by label).
	p2, _ := pods.Get(ctx, "api-2", metav1.GetOptions{})
	p2.Labels = map[string]string{"version": "v3"}
	if _, err := pods.Update(ctx, p2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	expect("pod labels", func(s *State) bool {
		eps := s.Services[api]
		return len(eps) == 2 && eps[1].Labels["version"] == "v3"
	})

	// The pod goes: its endpoint has no identity any more and is left out.
	if err := pods.Delete(ctx, "api-2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	expect("pod deleted", func(s *State) bool { return len(s.Services[api]) == 1 })

	// The slice goes: the Service stays, with no endpoints.
	if err := sl.Delete(ctx, "api-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	expect("slice deleted", func(s *State) bool { return s.Has(api) && len(s.Services[api]) == 0 })

	// The Service goes.
	if err := client.CoreV1().Services("shop").Delete(ctx, "api", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	expect("service deleted", func(s *State) bool { return !s.Has(api) })
}

// TestServicePortProtocol reads a port's protocol from appProtocol, else
// its name's prefix (Istio's convention).
func TestServicePortProtocol(t *testing.T) {
	app := func(s string) *string { return &s }
	for _, tc := range []struct {
		name        string
		appProtocol *string
		want        string
	}{
		{"http", nil, "http"},
		{"http-web", nil, "http"},
		{"grpc-api", nil, "http"},
		{"tcp-db", nil, "tcp"},
		{"mysql", nil, "tcp"},
		{"tls", nil, "tcp"},
		{"web", nil, ""},
		{"", nil, ""},
		{"web", app("kubernetes.io/h2c"), "http"},
		{"http", app("tcp"), "tcp"}, // appProtocol wins over the name
		{"tcp", app("HTTP"), "http"},
		{"web", app("example.com/custom"), ""},
	} {
		if got := protocolOf(corev1.ServicePort{Name: tc.name, AppProtocol: tc.appProtocol}); got != tc.want {
			t.Errorf("port %q appProtocol %v: %q, want %q", tc.name, tc.appProtocol, got, tc.want)
		}
	}
}
