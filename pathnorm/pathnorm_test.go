package pathnorm

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestPathNormalizationRules(t *testing.T) {
	const bad = "\x00error"
	for _, tc := range []struct {
		in                   string
		decode, keep, reject string
	}{
		{"/", "/", "/", "/"},
		{"/admin", "/admin", "/admin", "/admin"},
		{"/%61dmin", "/admin", "/admin", "/admin"},
		{"/%2561dmin", "/%2561dmin", "/%2561dmin", "/%2561dmin"},
		{"/public/../admin", "/admin", "/admin", "/admin"},
		{"/public/%2e%2e/admin", "/admin", "/admin", "/admin"},
		{"/public/.%2E/admin", "/admin", "/admin", "/admin"},
		{"/public/%252e%252e/admin", "/public/%252e%252e/admin", "/public/%252e%252e/admin", "/public/%252e%252e/admin"},
		{"//admin", "/admin", "/admin", "/admin"},
		{"/./admin", "/admin", "/admin", "/admin"},
		{"/ADMIN", "/ADMIN", "/ADMIN", "/ADMIN"},
		{"/admin%2F", "/admin/", "/admin%2F", bad},
		{"/admin%2fx", "/admin/x", "/admin%2Fx", bad},
		{"/public/..%2Fadmin", "/admin", "/public/..%2Fadmin", bad},
		{"/public/..%5Cadmin", "/admin", "/public/..%5Cadmin", bad},
		{"/public/..\\admin", "/admin", "/admin", "/admin"},
		{"\\admin", bad, bad, bad},
		{"/admin%00", bad, bad, bad},
		{"/admin%1f", bad, bad, bad},
		{"/admin%7F", bad, bad, bad},
		{"/admin\x00", bad, bad, bad},
		{"/ad min", bad, bad, bad},
		{"/admin#x", bad, bad, bad},
		{"/admin%", bad, bad, bad},
		{"/admin%4", bad, bad, bad},
		{"/admin%zz", bad, bad, bad},
		{"/admin;x", "/admin;x", "/admin;x", "/admin;x"},
		{"/public/..;/admin", bad, bad, bad},
		{"/public/%2e%2e;x/admin", bad, bad, bad},
		{"/.;/admin", bad, bad, bad},
		{"/;x/admin", bad, bad, bad},
		{"/a/b/..", "/a/", "/a/", "/a/"},
		{"/a/b/.", "/a/b/", "/a/b/", "/a/b/"},
		{"/..", "/", "/", "/"},
		{"/../../admin", "/admin", "/admin", "/admin"},
		{"/a//b//", "/a/b/", "/a/b/", "/a/b/"},
		{"/a/...", "/a/...", "/a/...", "/a/..."},
		{"/caf\xc3\xa9", "/caf%C3%A9", "/caf%C3%A9", "/caf%C3%A9"},
		{"/caf%c3%a9", "/caf%C3%A9", "/caf%C3%A9", "/caf%C3%A9"},
		{"/a%20b", "/a%20b", "/a%20b", "/a%20b"},
		{"/a\"<>`{}|^[]", "/a%22%3C%3E%60%7B%7D%7C%5E%5B%5D", "/a%22%3C%3E%60%7B%7D%7C%5E%5B%5D", "/a%22%3C%3E%60%7B%7D%7C%5E%5B%5D"},
		{"/a:b@c!$&'()*+,=~-_.x", "/a:b@c!$&'()*+,=~-_.x", "/a:b@c!$&'()*+,=~-_.x", "/a:b@c!$&'()*+,=~-_.x"},
		{"/%7e%2D%5f", "/~-_", "/~-_", "/~-_"},
	} {
		for _, m := range []struct {
			o    Options
			want string
		}{{Options{Decode}, tc.decode}, {Options{Keep}, tc.keep}, {Options{Reject}, tc.reject}} {
			got, err := m.o.Path(tc.in)
			if tc.in != "" && m.want == bad {
				if err == nil || !errors.Is(err, ErrInvalid) {
					t.Errorf("%s Path(%q) = %q, %v; want an ErrInvalid", m.o.EscapedSlashes, tc.in, got, err)
				}
				continue
			}
			if err != nil || got != m.want {
				t.Errorf("%s Path(%q) = %q, %v; want %q", m.o.EscapedSlashes, tc.in, got, err, m.want)
			}
		}
	}
}

func TestPathNormalizationTarget(t *testing.T) {
	for _, tc := range []struct {
		method, in string
		want       Target
		err        bool
	}{
		{"GET", "/a?b=1", Target{Path: "/a", Query: "b=1"}, false},
		{"GET", "/a", Target{Path: "/a"}, false},
		{"GET", "/a?", Target{Path: "/a", Changed: true}, false},
		{"GET", "/%61?x=%2e", Target{Path: "/a", Query: "x=%2e", Changed: true}, false},
		{"GET", "/a?x=\xff", Target{Path: "/a", Query: "x=%FF", Changed: true}, false},
		{"GET", "/a?x=%zz", Target{}, true},
		{"GET", "/a?x=1#f", Target{}, true},
		{"GET", "/a?x= 1", Target{}, true},
		{"GET", "http://api/x/../admin?q", Target{Path: "/admin", Query: "q", Changed: true}, false},
		{"GET", "HTTPS://api", Target{Path: "/", Changed: true}, false},
		{"GET", "http://api?x=1", Target{Path: "/", Query: "x=1", Changed: true}, false},
		{"GET", "http://api#frag", Target{}, true},
		{"OPTIONS", "*", Target{Path: "*"}, false},
		{"GET", "*", Target{}, true},
		{"GET", "api:80", Target{}, true},
		{"GET", "", Target{}, true},
		{"GET", "ftp://x/", Target{}, true},
	} {
		got, err := Options{}.Target(tc.method, tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("Target(%s %q) = %+v, %v; want %+v, error %v", tc.method, tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestPathNormalizationQuery(t *testing.T) {
	got := ParseQuery("a=1&a=2&b&c=x+y%21&&d=1;e=2&%61=3")
	want := map[string][]string{"a": {"1", "2", "3"}, "b": {""}, "c": {"x y!"}, "d": {"1;e=2"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ParseQuery = %v, want %v", got, want)
	}
	if ParseQuery("") != nil {
		t.Fatal("empty query parsed to a map")
	}
}

func TestPathNormalizationFastPathAllocates(t *testing.T) {
	for _, p := range []string{"/", "/api/v1/items/42;v=1", "/a%20b/%C3%A9", "/grpc.health.v1.Health/Check"} {
		if n := testing.AllocsPerRun(100, func() { Options{}.Path(p) }); n != 0 {
			t.Errorf("Path(%q) allocates %v times", p, n)
		}
		target := p + "?x=1"
		if n := testing.AllocsPerRun(100, func() { Options{}.Target("GET", target) }); n != 0 {
			t.Errorf("Target(%q) allocates %v times", p, n)
		}
	}
}

func TestParseEscapedSlashes(t *testing.T) {
	for in, want := range map[string]EscapedSlashes{"keep": Keep, "decode": Decode, "reject": Reject, "KEEP_UNCHANGED": Keep, "UNESCAPE_AND_FORWARD": Decode, "REJECT_REQUEST": Reject} {
		if got, err := ParseEscapedSlashes(in); err != nil || got != want {
			t.Errorf("ParseEscapedSlashes(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseEscapedSlashes("Keep"); err == nil || !strings.Contains(err.Error(), "keep, decode or reject") {
		t.Errorf("bad value: %v", err)
	}
}

// FuzzNormalize: normalizing is idempotent, the normal form is what the
// fast path accepts as is, and it holds no dot segment, repeated slash,
// encoded unreserved character or control character.
func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"/", "/%61dmin", "/public/../admin", "/public/%2e%2e/admin", "//admin", "/./admin",
		"/admin%2F", "/%2561dmin", "/admin;x", "/public/..%2Fadmin", "/public/..%5Cadmin", "/admin%00", "/..;/a",
		"/a\\b", "/caf\xc3\xa9", "/a/b/..", "/a?x=1", "http://h/a/../b", "*"} {
		f.Add(s, uint8(0))
		f.Add(s, uint8(1))
		f.Add(s, uint8(2))
	}
	f.Fuzz(func(t *testing.T, in string, mode uint8) {
		o := Options{EscapedSlashes(mode % 3)}
		once, err := o.Target("GET", in)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		twice, err := o.Target("GET", once.URI())
		if err != nil || twice.Path != once.Path || twice.Query != once.Query || twice.Changed {
			t.Fatalf("%q → %q → %+v, %v", in, once.URI(), twice, err)
		}
		if once.Path == "*" {
			return
		}
		if !o.isNormal(once.Path) {
			t.Fatalf("%q → %q, which the fast path would normalize again", in, once.Path)
		}
		p := once.Path
		for _, bad := range []string{"/../", "/./", "//", "\\", "#", "?"} {
			if strings.Contains(p, bad) {
				t.Fatalf("%q → %q contains %q", in, p, bad)
			}
		}
		if strings.HasSuffix(p, "/..") || strings.HasSuffix(p, "/.") || p[0] != '/' {
			t.Fatalf("%q → %q", in, p)
		}
		for i := 0; i < len(p); i++ {
			if p[i] < 0x21 || p[i] >= 0x7f {
				t.Fatalf("%q → %q has byte %#x", in, p, p[i])
			}
			if p[i] == '%' {
				d := mustHex(t, p[i+1])<<4 | mustHex(t, p[i+2])
				if isUnreserved(d) || d < 0x20 || d == 0x7f {
					t.Fatalf("%q → %q keeps the escape %s", in, p, p[i:i+3])
				}
			}
		}
	})
}

func mustHex(t *testing.T, c byte) byte {
	b, ok := unhex(c)
	if !ok {
		t.Fatalf("bad hex %q", c)
	}
	return b
}
