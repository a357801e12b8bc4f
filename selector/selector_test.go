package selector

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    Selector
		wantErr string
	}{
		{in: "unix:uid:1000", want: Selector{"unix", "uid:1000"}},
		{in: "unix:path:/usr/bin/a:b", want: Selector{"unix", "path:/usr/bin/a:b"}},
		{in: "unix:user:www-data", want: Selector{"unix", "user:www-data"}},
		{in: "k8s:ns:default", want: Selector{"k8s", "ns:default"}},
		{in: "unix:sha256:" + strings.Repeat("ab", 32), want: Selector{"unix", "sha256:" + strings.Repeat("ab", 32)}},
		{in: "", wantErr: "want type:value"},
		{in: "unix", wantErr: "want type:value"},
		{in: ":uid:1", wantErr: "want type:value"},
		{in: "unix:", wantErr: "want type:value"},
		{in: "Unix:uid:1", wantErr: "only lower-case"},
		{in: "unix:uid:abc", wantErr: "decimal id"},
		{in: "unix:uid:-1", wantErr: "decimal id"},
		{in: "unix:uid:99999999999", wantErr: "decimal id"},
		{in: "unix:path:relative", wantErr: "absolute"},
		{in: "unix:sha256:abc", wantErr: "64 lower-case hex"},
		{in: "unix:sha256:" + strings.Repeat("AB", 32), wantErr: "64 lower-case hex"},
		{in: "unix:pid:1", wantErr: "unknown unix key"},
		{in: "unix:uid", wantErr: "unix:KEY:VALUE"},
		{in: "k8s:ns:a\nb", wantErr: "control character"},
		{in: "k8s:" + strings.Repeat("a", 2000), wantErr: "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse(%q) error = %v, want it to contain %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("Parse(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if got.String() != tt.in {
				t.Fatalf("String() = %q, want %q", got.String(), tt.in)
			}
		})
	}
	if _, err := Parse("x"); !errors.Is(err, ErrSyntax) {
		t.Fatalf("want ErrSyntax, got %v", err)
	}
}

func TestSetIncludes(t *testing.T) {
	uid := Unix(UnixUID, "1000")
	gid := Unix(UnixGID, "1000")
	path := Unix(UnixPath, "/bin/web")
	set := NewSet(uid, gid)
	tests := []struct {
		name string
		want []Selector
		ok   bool
	}{
		{"subset", []Selector{uid}, true},
		{"all", []Selector{uid, gid}, true},
		{"extra", []Selector{uid, path}, false},
		{"empty never matches", nil, false},
	}
	for _, tt := range tests {
		if got := set.Includes(tt.want); got != tt.ok {
			t.Errorf("%s: Includes = %v, want %v", tt.name, got, tt.ok)
		}
	}
}

func TestSortDedups(t *testing.T) {
	got := Sort([]Selector{Unix("uid", "2"), Unix("gid", "1"), Unix("uid", "2")})
	if len(got) != 2 || got[0] != Unix("gid", "1") || got[1] != Unix("uid", "2") {
		t.Fatalf("Sort = %v", got)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"unix:uid:1000", "unix:path:/a:b", "k8s:ns:x", "unix:sha256:" + strings.Repeat("0", 64), "a:", ":"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := Parse(s)
		if err != nil {
			return
		}
		// What parses must print back to itself and parse again the same.
		if sel.String() != s {
			t.Fatalf("String() = %q, want %q", sel.String(), s)
		}
		again, err := Parse(sel.String())
		if err != nil || again != sel {
			t.Fatalf("reparse of %q: %+v, %v", s, again, err)
		}
	})
}
