package svid

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestJoinTokenNotInArgvFileRules(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		path    string
		want    string // the token, or "" for an error
		wantErr []string
	}{
		{"0600", write("ok", "tok-1\n", 0o600), "tok-1", nil},
		{"0400", write("ro", "  tok-2  ", 0o400), "tok-2", nil},
		{"group readable", write("g", "tok", 0o640), "", []string{"/g", "0640", "group or others"}},
		{"other readable", write("o", "tok", 0o604), "", []string{"0604"}},
		{"directory", dir, "", []string{"not a regular file"}},
		{"empty", write("e", " \n", 0o600), "", []string{"empty"}},
		{"two words", write("w", "a b", 0o600), "", []string{"more than one word"}},
		{"too big", write("big", strings.Repeat("x", maxTokenFile+1), 0o600), "", []string{"more than"}},
		{"missing", filepath.Join(dir, "none"), "", []string{"no such file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readJoinTokenFile(tt.path)
			if tt.want != "" {
				if err != nil || got != tt.want {
					t.Fatalf("got %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted, token %q", got)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// The file is re-read on every Next(): a token is offered until spent,
// then only a new one is.
func TestJoinTokenFileReread(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	toks, err := NewTokens("", path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if toks.Where() != path {
		t.Fatal("a token file must be re-readable")
	}
	if _, err := toks.Next(); !errors.Is(err, ErrNoToken) {
		t.Fatalf("missing file: %v, want ErrNoToken", err)
	}
	os.WriteFile(path, []byte("one"), 0o600)
	for range 2 { // offered again until spent: a network failure wastes nothing
		if tok, err := toks.Next(); tok != JoinToken("one") || err != nil {
			t.Fatalf("next = %q, %v", tok, err)
		}
	}
	toks.Spent(JoinToken("one"))
	if _, err := toks.Next(); !errors.Is(err, ErrNoToken) {
		t.Fatalf("spent token offered again: %v", err)
	}
	os.WriteFile(path, []byte("two"), 0o600)
	if tok, err := toks.Next(); tok != JoinToken("two") || err != nil {
		t.Fatalf("new token: %q, %v", tok, err)
	}
	os.Chmod(path, 0o644)
	if _, err := toks.Next(); err == nil || errors.Is(err, ErrNoToken) {
		t.Fatalf("readable file: %v, want a refusal", err)
	}

	stdin, err := NewTokens("", StdinTokenFile, strings.NewReader("from-stdin\n"))
	if err != nil {
		t.Fatal(err)
	}
	if tok, _ := stdin.Next(); tok != JoinToken("from-stdin") || stdin.Where() != "" {
		t.Fatalf("stdin token %q, re-read from %q", tok, stdin.Where())
	}
	if _, err := NewTokens("", StdinTokenFile, strings.NewReader("")); err == nil {
		t.Fatal("empty stdin accepted")
	}
}

func FuzzReadToken(f *testing.F) {
	for _, s := range []string{"abc", " abc\n", "", "a b", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := readToken(strings.NewReader(s), "fuzz")
		if err != nil {
			return
		}
		if tok == "" || strings.ContainsAny(tok, " \t\r\n") || len(tok) > maxTokenFile || !strings.Contains(s, tok) {
			t.Fatalf("readToken(%q) = %q", s, tok)
		}
	})
}
