package naming

import (
	"errors"
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

// The canonical outside host of a request's authority: lower case, no
// port or trailing dot; a wildcard or an IP is no outside host name.
func TestOutsideHostNames(t *testing.T) {
	for in, want := range map[string]string{"Reviews.Example.com:8080": "reviews.example.com", "httpbin.org.": "httpbin.org"} {
		if got, err := OutsideHost(in); err != nil || got != want {
			t.Errorf("%q: %q %v, want %q", in, got, err, want)
		}
	}
	for in, want := range map[string]error{"*.example.com": ErrMalformed, "a.com:0": ErrMalformed, "1.2.3.4:80": ErrNotInMesh, "a@b.com": ErrMalformed} {
		if _, err := OutsideHost(in); !errors.Is(err, want) {
			t.Errorf("%q: err %v, want %v", in, err, want)
		}
	}
	if got := (Resolver{}).FQDN(Service{Name: "reviews", Namespace: "prod"}); got != "reviews.prod.svc.cluster.local" {
		t.Errorf("FQDN %q", got)
	}
}
