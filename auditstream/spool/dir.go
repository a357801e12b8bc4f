package spool

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// privateDir makes dir (and its missing parents, 0700) and checks that no
// one but this process's user can swap it or read it: the sidecar's
// default spool is under the world-writable $TMPDIR, where another user
// could have put a symlink, or a parent directory of their own, in its
// place beforehand (then rename the spool away and put forged segments in
// its stead). dir must be a real directory owned by this user (made 0700);
// its parent must be owned by this user or root and writable by no one
// else, unless sticky (as /tmp is).
func privateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	fi, err := os.Lstat(abs)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		return fmt.Errorf("spool: %s is a symlink: give the spool a directory of its own", dir)
	case !fi.IsDir():
		return fmt.Errorf("spool: %s is not a directory", dir)
	}
	uid := uint32(os.Getuid())
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != uid {
		return fmt.Errorf("spool: %s is owned by uid %d, not by this process's (%d)", dir, st.Uid, uid)
	}
	if err := os.Chmod(abs, 0o700); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	parent := filepath.Dir(abs)
	pfi, err := os.Stat(parent)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	if st, ok := pfi.Sys().(*syscall.Stat_t); ok && st.Uid != uid && st.Uid != 0 {
		return fmt.Errorf("spool: %s: its parent %s is owned by uid %d, who could replace it", dir, parent, st.Uid)
	}
	if pfi.Mode().Perm()&0o022 != 0 && pfi.Mode()&os.ModeSticky == 0 {
		return fmt.Errorf("spool: %s: its parent %s is writable by others without the sticky bit, who could replace it", dir, parent)
	}
	return nil
}
