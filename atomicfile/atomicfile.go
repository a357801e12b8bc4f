// Package atomicfile writes files so that readers, and a crash, see either
// the old content or the new, never half of it: keys and SVIDs are written
// through here.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write writes data to a temporary file beside path with the given mode,
// syncs it and renames it into place.
func Write(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	// The mode is set before any byte is written, so a key is never
	// readable by others even for a moment.
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
