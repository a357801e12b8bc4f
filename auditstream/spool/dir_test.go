package spool

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A spool's directory (by default under the world-writable $TMPDIR) must
// be one no one else can swap or read: a symlink in its place, a parent
// others may write without the sticky bit, or a directory or parent of
// another user is refused at Open and Instance, naming it; $TMPDIR itself
// (sticky) is fine.
func TestSpoolRefusesUnsafeDir(t *testing.T) {
	base := t.TempDir()
	mk := func(name string, mode os.FileMode) string {
		p := filepath.Join(base, name)
		if err := os.Mkdir(p, mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		return p
	}
	real := mk("real", 0o700)
	link := filepath.Join(base, "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	open := mk("open", 0o777)
	sticky := mk("sticky", 0o777|os.ModeSticky)
	other := mk("other", 0o700)
	otherParent := mk("otherparent", 0o755)
	if os.Getuid() == 0 {
		os.Chown(other, 4242, 4242)
		os.Chown(otherParent, 4242, 4242)
	}
	for _, tt := range []struct {
		name, dir, naming string
		ok                bool
	}{
		{"a fresh directory", filepath.Join(base, "fresh", "spool"), "", true},
		{"under a sticky world-writable parent", filepath.Join(sticky, "spool"), "", true},
		{"a symlink", link, "symlink", false},
		{"under a parent others may write", filepath.Join(open, "spool"), "writable", false},
		{"another user's directory", other, "owned", false},
		{"under another user's directory", filepath.Join(otherParent, "spool"), "owned", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if strings.Contains(tt.name, "another user") && os.Getuid() != 0 {
				t.Skip("needs root to give a directory to another user")
			}
			if tt.naming == "owned" && tt.dir == filepath.Join(otherParent, "spool") {
				os.Mkdir(tt.dir, 0o700) // made by the other user's hand, in their directory
			}
			_, ierr := Instance(tt.dir, "spiffe://example.org/ns/a/sa/b")
			s, err := Open(tt.dir, Options{Consumers: []string{"x"}})
			if err == nil {
				s.Close()
			}
			for _, e := range []error{ierr, err} {
				if tt.ok != (e == nil) {
					t.Fatalf("Instance: %v, Open: %v; want ok=%v", ierr, err, tt.ok)
				}
				if e != nil && !strings.Contains(e.Error(), tt.naming) {
					t.Fatalf("error %q does not say %q", e, tt.naming)
				}
			}
		})
	}
}
