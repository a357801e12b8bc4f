package naming

import (
	"errors"
	"strings"
	"testing"
)

func TestMeshHostNames(t *testing.T) {
	r, err := NewResolver("prod", "corp.local")
	if err != nil {
		t.Fatal(err)
	}
	api := Service{Name: "api", Namespace: "prod"}
	other := Service{Name: "api", Namespace: "other"}
	for _, tt := range []struct {
		authority string
		want      Service
		err       error
	}{
		// The service's own forms, with ports, trailing dots, any case.
		{"api", api, nil},
		{"api:8080", api, nil},
		{"API", api, nil},
		{"api.", api, nil},
		{"api.:80", api, nil},
		{"api.prod", api, nil},
		{"api.other", other, nil},
		{"api.other.svc", other, nil},
		{"api.other.svc.corp.local", other, nil},
		{"Api.Other.SVC.Corp.Local.:443", other, nil},
		{"api.prod.svc.corp.local.", api, nil},
		{"a-b-1", Service{Name: "a-b-1", Namespace: "prod"}, nil},

		// Well-formed names outside the mesh.
		{"api.github.com", Service{}, ErrNotInMesh},
		{"api.github.com:443", Service{}, ErrNotInMesh},
		{"api.prod.svc.cluster.local", Service{}, ErrNotInMesh}, // not this cluster's domain
		{"api.prod.svc.corp.local.evil", Service{}, ErrNotInMesh},
		{"api.prod.svc.corp", Service{}, ErrNotInMesh},
		{"api.prod.x", Service{}, ErrNotInMesh},
		{"10.0.0.1", Service{}, ErrNotInMesh},
		{"10.0.0.1:80", Service{}, ErrNotInMesh},
		{"[::1]", Service{}, ErrNotInMesh},
		{"[::1]:80", Service{}, ErrNotInMesh},

		// Malformed.
		{"", Service{}, ErrMalformed},
		{".", Service{}, ErrMalformed},
		{"api..", Service{}, ErrMalformed},
		{"api..prod", Service{}, ErrMalformed},
		{".api", Service{}, ErrMalformed},
		{"api:", Service{}, ErrMalformed},
		{"api:abc", Service{}, ErrMalformed},
		{"api:0", Service{}, ErrMalformed},
		{"api:99999", Service{}, ErrMalformed},
		{"api:123456", Service{}, ErrMalformed},
		{"api:-1", Service{}, ErrMalformed},
		{"api:80:80", Service{}, ErrMalformed},
		{"[::1", Service{}, ErrMalformed},
		{"[::1]x", Service{}, ErrMalformed},
		{"[::1]:", Service{}, ErrMalformed},
		{"[zz]", Service{}, ErrMalformed},
		{"a@api", Service{}, ErrMalformed},
		{"a:b@api", Service{}, ErrMalformed},
		{"api x", Service{}, ErrMalformed},
		{" api", Service{}, ErrMalformed},
		{"api\t", Service{}, ErrMalformed},
		{"äpi", Service{}, ErrMalformed},
		{"api.\u212aube", Service{}, ErrMalformed}, // Kelvin sign folds to 'k'
		{"ap%69", Service{}, ErrMalformed},
		{"api%2eprod", Service{}, ErrMalformed},
		{"api/x", Service{}, ErrMalformed},
		{"api\\x", Service{}, ErrMalformed},
		{"a_pi", Service{}, ErrMalformed},
		{"-api", Service{}, ErrMalformed},
		{"api-", Service{}, ErrMalformed},
		{strings.Repeat("a", 64), Service{}, ErrMalformed},
		{strings.Repeat("a.", 127) + "a", Service{}, ErrMalformed},
	} {
		got, err := r.Authority(tt.authority)
		if !errors.Is(err, tt.err) || got != tt.want {
			t.Errorf("Authority(%q) = %+v, %v; want %+v, %v", tt.authority, got, err, tt.want, tt.err)
		}
	}
}

func TestMeshHostNamesDefaults(t *testing.T) {
	var r Resolver
	if r.Namespace() != DefaultNamespace || r.ClusterDomain() != DefaultClusterDomain {
		t.Fatalf("zero resolver: %q %q", r.Namespace(), r.ClusterDomain())
	}
	for host, want := range map[string]Service{
		"api":                           {Name: "api", Namespace: "default"},
		"api.team-a.svc.cluster.local":  {Name: "api", Namespace: "team-a"},
		"api.team-a.svc.cluster.local.": {Name: "api", Namespace: "team-a"},
	} {
		if got, err := r.Host(host); err != nil || got != want {
			t.Errorf("Host(%q) = %+v, %v; want %+v", host, got, err, want)
		}
	}
	if _, err := r.Host("api:80"); !errors.Is(err, ErrMalformed) {
		t.Errorf("Host with a port: %v", err)
	}
	if s := (Service{Name: "api", Namespace: "prod"}); s.String() != "api.prod" || s.IsZero() {
		t.Errorf("String %q", s.String())
	}
}

func TestMeshHostNamesResolver(t *testing.T) {
	for _, tt := range []struct{ ns, domain, err string }{
		{"default", "cluster.local", ""},
		{"a", "local", ""},
		{"", "cluster.local", "namespace"},
		{"Prod", "cluster.local", "namespace"},
		{"prod", "", "cluster domain"},
		{"prod", "cluster..local", "cluster domain"},
		{"prod", "cluster_local", "cluster domain"},
	} {
		_, err := NewResolver(tt.ns, tt.domain)
		if (err == nil) != (tt.err == "") || err != nil && !strings.Contains(err.Error(), tt.err) {
			t.Errorf("NewResolver(%q, %q): %v, want %q", tt.ns, tt.domain, err, tt.err)
		}
	}
}

func TestMeshHostNamesServiceName(t *testing.T) {
	for name, want := range map[string]bool{
		"api": true, "a": true, "a-1": true, "1a": true, strings.Repeat("a", 63): true,
		"": false, "-a": false, "a-": false, "A": false, "a.b": false, "a_b": false, strings.Repeat("a", 64): false,
	} {
		if ValidServiceName(name) != want {
			t.Errorf("ValidServiceName(%q) = %v", name, !want)
		}
	}
}

// FuzzAuthority checks that whatever a request carries, the resolver
// never panics, answers with exactly one of a service or a classified
// error, and only resolves names that are one of a service's own forms.
func FuzzAuthority(f *testing.F) {
	for _, s := range []string{"api", "api:80", "api.prod.svc.cluster.local.", "api.github.com", "[::1]:80", "a@api", "api..", "ap%69", "api:99999", "\u212a"} {
		f.Add(s)
	}
	r, _ := NewResolver("prod", DefaultClusterDomain)
	f.Fuzz(func(t *testing.T, a string) {
		svc, err := r.Authority(a)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNotInMesh) || !svc.IsZero() {
				t.Fatalf("Authority(%q) = %+v, %v", a, svc, err)
			}
			return
		}
		if !ValidServiceName(svc.Name) || !ValidNamespace(svc.Namespace) {
			t.Fatalf("Authority(%q) = %+v: not valid names", a, svc)
		}
		for i := 0; i < len(a); i++ {
			if c := a[i]; c >= 0x80 || c == '@' || c == '%' || c == ' ' {
				t.Fatalf("Authority(%q) accepted a byte %q", a, c)
			}
		}
		if !strings.HasPrefix(strings.ToLower(a), svc.Name) {
			t.Fatalf("Authority(%q) = %+v: name is not the first label", a, svc)
		}
	})
}
