package naming

import (
	"errors"
	"strings"
	"testing"
)

// TestResourceHostKind: a resource's host is a mesh service, a host
// outside the mesh or a wildcard, as Istio reads it: dotted names are
// fully qualified, so two labels (httpbin.org, reviews.prod) are outside
// the mesh; only a bare name, name.ns.svc and name.ns.svc.<domain> are
// services.
func TestResourceHostKind(t *testing.T) {
	for _, tc := range []struct {
		host, ns string
		kind     HostKind
		svc      Service
		name     string
		err      error
	}{
		{host: "reviews", ns: "prod", kind: MeshService, svc: Service{"reviews", "prod"}, name: "reviews"},
		{host: "Reviews.", ns: "demo", kind: MeshService, svc: Service{"reviews", "demo"}, name: "reviews"},
		{host: "reviews.prod.svc", ns: "demo", kind: MeshService, svc: Service{"reviews", "prod"}, name: "reviews.prod.svc"},
		{host: "reviews.prod.svc.cluster.local", ns: "demo", kind: MeshService, svc: Service{"reviews", "prod"}, name: "reviews.prod.svc.cluster.local"},
		{host: "reviews.prod", ns: "demo", kind: OutsideHost, name: "reviews.prod"},
		{host: "reviews.prod", ns: "prod", kind: OutsideHost, name: "reviews.prod"},
		{host: "httpbin.org", ns: "default", kind: OutsideHost, name: "httpbin.org"},
		{host: "example.com", ns: "default", kind: OutsideHost, name: "example.com"},
		{host: "api.github.com", ns: "default", kind: OutsideHost, name: "api.github.com"},
		{host: "reviews.prod.svc.other.domain", ns: "default", kind: OutsideHost, name: "reviews.prod.svc.other.domain"},
		{host: "*.example.com", ns: "default", kind: WildcardHost, name: "*.example.com"},
		{host: "*", ns: "default", kind: WildcardHost, name: "*"},
		{host: "10.0.0.1", ns: "default", err: ErrNotInMesh},
		{host: "a..b", ns: "default", err: ErrMalformed},
		{host: "a.*.b", ns: "default", err: ErrWildcard},
	} {
		r, err := NewResolver(tc.ns, DefaultClusterDomain)
		if err != nil {
			t.Fatal(err)
		}
		got, err := r.ResourceHost(tc.host)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("ResourceHost(%q) in %s: error %v, want %v", tc.host, tc.ns, err, tc.err)
			}
			continue
		}
		if err != nil || got.Kind != tc.kind || got.Service != tc.svc || got.Name.String() != tc.name {
			t.Errorf("ResourceHost(%q) in %s = %v %+v %q, %v; want %v %+v %q", tc.host, tc.ns, got.Kind, got.Service, got.Name, err, tc.kind, tc.svc, tc.name)
		}
	}
}

// TestResourceHostDNSService: an outside host of two labels is the form
// Kubernetes DNS reads as name.namespace (sigil apply warns of it).
func TestResourceHostDNSService(t *testing.T) {
	for host, want := range map[string]Service{"reviews.prod": {"reviews", "prod"}, "httpbin.org": {"httpbin", "org"}, "api.github.com": {}, "reviews": {}, "*.prod": {}} {
		h, err := Resolver{}.ResourceHost(host)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := h.DNSService()
		if got != want || ok == want.IsZero() {
			t.Errorf("DNSService(%q) = %+v %v, want %+v", host, got, ok, want)
		}
	}
}

// TestAppAuthorityTwoLabels: on the request path a two-label name is the
// mesh service only when the mesh knows it, else a host outside the mesh;
// the other forms are read as before.
func TestAppAuthorityTwoLabels(t *testing.T) {
	known := func(s Service) bool { return s == Service{"reviews", "prod"} }
	r, _ := NewResolver("demo", DefaultClusterDomain)
	for _, tc := range []struct {
		in   string
		want Service
		err  error
	}{
		{in: "reviews.prod", want: Service{"reviews", "prod"}},
		{in: "reviews.prod:9080", want: Service{"reviews", "prod"}},
		{in: "httpbin.org", err: ErrNotInMesh},
		{in: "httpbin.org:80", err: ErrNotInMesh},
		{in: "ratings", want: Service{"ratings", "demo"}},
		{in: "ratings.prod.svc", want: Service{"ratings", "prod"}},
		{in: "ratings.prod.svc.cluster.local", want: Service{"ratings", "prod"}},
		{in: "api.github.com", err: ErrNotInMesh},
		{in: "a..b", err: ErrMalformed},
	} {
		got, err := r.AppAuthority(tc.in, known)
		if got != tc.want || tc.err == nil && err != nil || tc.err != nil && !errors.Is(err, tc.err) {
			t.Errorf("AppAuthority(%q) = %+v, %v; want %+v, %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

// FuzzResourceHost checks that whatever host a resource or a request
// carries, the two readings never panic and agree where they must: a
// resource's host is exactly one of a kind or an error; a mesh service is
// a bare name or a .svc form, never a name of two labels; an outside
// host has a dot; and the request path's reading is Authority's, but for a
// two-label name the mesh does not know, which is outside the mesh.
func FuzzResourceHost(f *testing.F) {
	for _, s := range []string{"reviews", "reviews.prod", "httpbin.org", "reviews.prod.svc", "reviews.prod.svc.cluster.local.", "*.example.com", "*", "10.0.0.1", "a..b", "API.Prod:80", "\u212a"} {
		f.Add(s)
	}
	r, _ := NewResolver("demo", DefaultClusterDomain)
	f.Fuzz(func(t *testing.T, host string) {
		h, err := r.ResourceHost(host)
		switch {
		case err != nil:
			if h.Kind != 0 || !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNotInMesh) && !errors.Is(err, ErrWildcard) {
				t.Fatalf("ResourceHost(%q) = %+v, %v", host, h, err)
			}
		case h.Kind == MeshService:
			labels := strings.Count(h.Name.String(), ".") + 1
			if labels != 1 && !strings.Contains(h.Name.String(), ".svc") || labels == 2 || !ValidServiceName(h.Service.Name) || !ValidNamespace(h.Service.Namespace) {
				t.Fatalf("ResourceHost(%q) = mesh service %+v", host, h)
			}
		case h.Kind == OutsideHost:
			if !strings.Contains(h.Name.String(), ".") || h.Name.IsWildcard() || !h.Service.IsZero() {
				t.Fatalf("ResourceHost(%q) = outside host %+v", host, h)
			}
		case h.Kind == WildcardHost:
			if !h.Name.IsWildcard() {
				t.Fatalf("ResourceHost(%q) = wildcard %+v", host, h)
			}
		default:
			t.Fatalf("ResourceHost(%q) = %+v: no kind", host, h)
		}
		all, errAll := r.AppAuthority(host, func(Service) bool { return true })
		svc, errAuth := r.Authority(host)
		if all != svc || (errAll == nil) != (errAuth == nil) {
			t.Fatalf("AppAuthority(%q, all known) = %+v, %v; Authority = %+v, %v", host, all, errAll, svc, errAuth)
		}
		none, errNone := r.AppAuthority(host, nil)
		if errNone == nil && (none != svc || strings.Count(strings.TrimSuffix(strings.SplitN(host, ":", 2)[0], "."), ".") == 1) {
			t.Fatalf("AppAuthority(%q, none known) = %+v: a two-label name the mesh does not know", host, none)
		}
	})
}
