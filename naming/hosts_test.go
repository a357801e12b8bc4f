package naming

import (
	"errors"
	"strings"
	"testing"
)

// A resource's host is a DNS name in canonical form, with '*' only as the
// whole leftmost label; a wildcard matches suffixes at any depth.
func TestHostPatternRules(t *testing.T) {
	for _, tt := range []struct {
		in, want string
		err      error
		matches  []string
		misses   []string
	}{
		{in: "httpbin.org", want: "httpbin.org", matches: []string{"httpbin.org"}, misses: []string{"a.httpbin.org"}},
		{in: "API.GitHub.com.", want: "api.github.com"},
		{in: "*", want: "*", matches: []string{"a", "a.b.c"}},
		{in: "*.example.com", want: "*.example.com", matches: []string{"a.example.com", "a.b.example.com"}, misses: []string{"example.com", "aexample.com", "example.com.evil"}},
		{in: "*.local", want: "*.local", matches: []string{"reviews.prod.svc.cluster.local"}},
		{in: "*foo.com", err: ErrWildcard},
		{in: "a.*.com", err: ErrWildcard},
		{in: "*.*.com", err: ErrWildcard},
		{in: "*.", err: ErrMalformed},
		{in: "a..b", err: ErrMalformed},
		{in: "a_b.com", err: ErrMalformed},
		{in: "10.0.0.1", err: ErrNotInMesh},
		{in: "0.0.0.0.", err: ErrNotInMesh},
		{in: "10.0.0.300", err: ErrMalformed},
		{in: "127.1", err: ErrMalformed},
		{in: "[::1]", err: ErrNotInMesh},
		{in: "", err: ErrMalformed},
	} {
		p, err := ParseHostPattern(tt.in)
		if tt.err != nil {
			if !errors.Is(err, tt.err) {
				t.Errorf("%q: err %v, want %v", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || p.String() != tt.want {
			t.Errorf("%q: %q %v, want %q", tt.in, p, err, tt.want)
			continue
		}
		for _, m := range tt.matches {
			if !p.Matches(m) {
				t.Errorf("%q does not match %q", tt.in, m)
			}
		}
		for _, m := range tt.misses {
			if p.Matches(m) {
				t.Errorf("%q matches %q", tt.in, m)
			}
		}
	}
	plain, _ := ParseHostPattern("a.example.com")
	long, _ := ParseHostPattern("*.b.example.com")
	short, _ := ParseHostPattern("*.com")
	all, _ := ParseHostPattern("*")
	if !(plain.Specificity() > long.Specificity() && long.Specificity() > short.Specificity() && short.Specificity() > all.Specificity()) {
		t.Error("specificity: want a plain name, then the longer suffix, then \"*\"")
	}
}

// A service's FQDN is what wildcard hosts are matched against.
func TestHostPatternFQDN(t *testing.T) {
	if got := (Resolver{}).FQDN(Service{Name: "reviews", Namespace: "prod"}); got != "reviews.prod.svc.cluster.local" {
		t.Errorf("FQDN %q", got)
	}
	r, _ := NewResolver("prod", "corp.example")
	if got := r.FQDN(Service{Name: "reviews", Namespace: "prod"}); got != "reviews.prod.svc.corp.example" {
		t.Errorf("FQDN %q", got)
	}
}

// Whatever ParseHostPattern accepts is canonical (parsing its String gives
// it back), ASCII lower case, and has '*' only as the leftmost label.
func FuzzHostPattern(f *testing.F) {
	for _, s := range []string{"httpbin.org", "*.example.com", "*", "a.*.com", "*foo.com", "API.GitHub.com.", "10.0.0.1", "[::1]", "a..b", "\u212a.com"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseHostPattern(s)
		if err != nil {
			return
		}
		again, err := ParseHostPattern(p.String())
		if err != nil || again != p {
			t.Fatalf("%q → %q → %q %v", s, p, again, err)
		}
		name := p.String()
		if strings.Contains(strings.TrimPrefix(name, "*"), "*") || strings.ToLower(name) != name || strings.HasSuffix(name, ".") {
			t.Fatalf("%q → %q", s, name)
		}
		for i := 0; i < len(name); i++ {
			if name[i] >= 0x80 {
				t.Fatalf("%q → non-ASCII %q", s, name)
			}
		}
	})
}

// TestHostPatternSubsetOf: a host pattern is a subset of another as in
// Istio's host.Name.SubsetOf, which its SNI host rule uses.
func TestHostPatternSubsetOf(t *testing.T) {
	for _, tt := range []struct {
		h, o string
		want bool
	}{
		{"mysite.example.com", "mysite.example.com", true},
		{"mysite.example.com", "*.example.com", true},
		{"a.b.example.com", "*.example.com", true},
		{"example.com", "*.example.com", false},
		{"mysite.example.com", "other.example.com", false},
		{"*.wikipedia.org", "*.wikipedia.org", true},
		{"*.en.wikipedia.org", "*.wikipedia.org", true},
		{"*.wikipedia.org", "*.en.wikipedia.org", false},
		{"*.wikipedia.org", "en.wikipedia.org", false},
		{"*.example.com", "*", true},
		{"anything", "*", true},
		{"*", "*", true},
		{"*", "*.example.com", false},
		{"*.xexample.com", "*.example.com", false},
	} {
		h, err := ParseHostPattern(tt.h)
		if err != nil {
			t.Fatal(err)
		}
		o, err := ParseHostPattern(tt.o)
		if err != nil {
			t.Fatal(err)
		}
		if got := h.SubsetOf(o); got != tt.want {
			t.Errorf("%q SubsetOf %q = %v, want %v", tt.h, tt.o, got, tt.want)
		}
	}
}
