// Package privatefile reads credentials from files only their owner may
// read (join tokens, an upstream CA's key), refusing one that group or
// others can read, as ssh refuses such a private key: a credential others
// could read may already be in someone else's hands.
package privatefile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// ErrReadable means the file's mode lets group or others read it.
var ErrReadable = errors.New("lets group or others read it")

// Read returns the content of path, at most max bytes. The file must be a
// regular file (symlinks are followed) with no permission bits for group
// or others; the check is made on the opened file, so the file read is the
// file checked. It is opened non-blocking, so a FIFO or a device in the
// file's place is refused at once instead of waiting for a writer (which
// would hang the caller, the agent at start among them). Errors name the
// file and, for a loose mode, the mode.
func Read(path string, max int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("privatefile: %s: not a regular file but %s", path, kind(st.Mode()))
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("privatefile: %s: mode %04o %w; chmod 600 it (and replace what it holds: others may have read it)", path, perm, ErrReadable)
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("privatefile: %s: %w", path, err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("privatefile: %s: more than %d bytes", path, max)
	}
	return data, nil
}

// kind names a file type for an error message.
func kind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeDevice != 0:
		return "a device"
	}
	return fmt.Sprintf("of type %s", m.Type())
}
