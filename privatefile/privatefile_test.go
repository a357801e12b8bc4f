package privatefile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestJoinTokenNotInArgvPrivateFile(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name string
		mode os.FileMode
		size int
		want string // "" accepted, else a fragment of the error
	}{
		{"0600", 0o600, 10, ""},
		{"0400", 0o400, 10, ""},
		{"0640", 0o640, 10, "mode 0640"},
		{"0604", 0o604, 10, "mode 0604"},
		{"0660", 0o660, 10, "mode 0660"},
		{"too big", 0o600, 101, "more than 100 bytes"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, tt.name)
			os.WriteFile(p, []byte(strings.Repeat("x", tt.size)), 0o600)
			os.Chmod(p, tt.mode)
			data, err := Read(p, 100)
			if tt.want == "" {
				if err != nil || len(data) != tt.size {
					t.Fatalf("%d bytes, %v", len(data), err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), p) {
				t.Fatalf("error %v, want one naming %s and %q", err, p, tt.want)
			}
			if strings.HasPrefix(tt.want, "mode") && !errors.Is(err, ErrReadable) {
				t.Fatalf("%v is not ErrReadable", err)
			}
		})
	}
	if _, err := Read(dir, 100); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("directory: %v", err)
	}
}

// TestPrivateFileSpecialFiles: a FIFO (or a device) in the credential's
// place is refused at once, never waited on, and a symlink is judged by
// the file it names.
func TestPrivateFileSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	loose := filepath.Join(dir, "loose")
	os.WriteFile(loose, []byte("tok"), 0o644)
	os.Chmod(loose, 0o644)
	link := filepath.Join(dir, "link")
	if err := os.Symlink(loose, link); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ path, want string }{
		{fifo, "not a regular file"},
		{link, "mode 0644"},
	} {
		done := make(chan error, 1)
		go func() { _, err := Read(tt.path, 100); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%s: %v, want an error with %q", tt.path, err, tt.want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: Read still blocked after 5s (it waits for a writer)", tt.path)
		}
	}
}
