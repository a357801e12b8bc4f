package sink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sigil-mesh/sigil/auditstream"
)

// File sink defaults (spec parameters max-size, max-age, max-files).
const (
	DefaultFileMaxSize  = 100 << 20
	DefaultFileMaxAge   = 24 * time.Hour
	DefaultFileMaxFiles = 10
)

// rotatedLayout stamps a rotated file's name with the UTC time it was
// rotated: fixed width, so names sort in time order (lumberjack's layout,
// to the nanosecond).
const rotatedLayout = "2006-01-02T15-04-05.000000000Z"

func init() { register("file", openFile) }

// openFile is the file sink's Opener:
//
//	file:///var/log/sigil/audit.jsonl?max-size=100MiB&max-age=24h&max-files=10
//
// The path must be absolute and its directory must exist. max-size (bytes,
// KiB/MiB/GiB or KB/MB/GB; default 100MiB) and max-age (a Go duration,
// default 24h, 0 for never) rotate the active file; max-files (default 10,
// 0 keeps every one) is how many rotated files are kept.
func openFile(u *url.URL) (Sink, error) {
	if u.Host != "" && u.Host != "localhost" {
		return nil, fmt.Errorf("sink: file: host %q: a file spec names a local path (file:///dir/audit.jsonl)", u.Host)
	}
	if u.Opaque != "" || !filepath.IsAbs(u.Path) || strings.HasSuffix(u.Path, "/") {
		return nil, fmt.Errorf("sink: file: want an absolute file path such as file:///var/log/sigil/audit.jsonl")
	}
	q, err := parseSpecQuery(u, "max-size", "max-age", "max-files")
	if err != nil {
		return nil, err
	}
	var c fileConfig
	c.path = filepath.Clean(u.Path)
	if c.maxSize, err = q.size("max-size", DefaultFileMaxSize, 4096); err != nil {
		return nil, err
	}
	if c.maxAge, err = q.duration("max-age", DefaultFileMaxAge); err != nil {
		return nil, err
	}
	if c.maxFiles, err = q.count("max-files", DefaultFileMaxFiles, 0, 100000); err != nil {
		return nil, err
	}
	return newFileSink(c, time.Now)
}

// fileConfig is a checked file spec.
type fileConfig struct {
	path     string
	maxSize  int64
	maxAge   time.Duration // 0: no rotation by age
	maxFiles int           // 0: keep every rotated file
}

// fileSink appends records as JSON lines to one active file, rotating it
// by size and age. Rotation is written here rather than taken from
// lumberjack because the sink must fsync before Export returns (the spool
// drops a batch once it is acknowledged) and rotate by age, neither of
// which lumberjack does.
type fileSink struct {
	c   fileConfig
	now func() time.Time

	mu     sync.Mutex
	closed bool
	f      *os.File // nil after a failed rotation: the next Export reopens
	size   int64
	opened time.Time
}

// newFileSink opens c.path (0600), first rotating away a non-empty file a
// previous run left, so each run starts a file whose age is known.
func newFileSink(c fileConfig, now func() time.Time) (*fileSink, error) {
	st, err := os.Stat(filepath.Dir(c.path))
	if err != nil {
		return nil, fmt.Errorf("sink: file: directory of %s: %w", c.path, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("sink: file: %s is not a directory", filepath.Dir(c.path))
	}
	s := &fileSink{c: c, now: now}
	if st, err := os.Lstat(c.path); err == nil {
		if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("sink: file: %s: not a regular file but %s", c.path, st.Mode().Type())
		}
		if st.Size() > 0 {
			if err := s.rotateLocked(); err != nil {
				return nil, err
			}
		}
	}
	if err := s.openLocked(); err != nil {
		return nil, err
	}
	return s, nil
}

// openLocked opens or creates the active file, refusing a symlink in its
// place and a file others can read.
func (s *fileSink) openLocked() error {
	f, err := os.OpenFile(s.c.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("sink: file: opening %s: %w", s.c.path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("sink: file: %s: %w", s.c.path, err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		f.Close()
		return fmt.Errorf("sink: file: %s: mode %04o lets group or others read the audit trail; chmod 600 it", s.c.path, perm)
	}
	if st.Size() == 0 {
		if err := syncDir(filepath.Dir(s.c.path)); err != nil {
			f.Close()
			return err
		}
	}
	s.f, s.size, s.opened = f, st.Size(), s.now()
	return nil
}

// Export appends recs, one JSON object per line, and fsyncs the file
// before it returns nil. A failed write is cut back off the file, so a
// retried batch never leaves half a line behind.
func (s *fileSink) Export(ctx context.Context, recs []auditstream.Record) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sink: file: %w", err)
	}
	if len(recs) == 0 {
		return nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	for i := range recs {
		if err := enc.Encode(&recs[i]); err != nil {
			return fmt.Errorf("sink: file: encoding record %s: %w", recs[i].DecisionID, err)
		}
	}
	return s.write(buf.Bytes())
}

// ExportLines is Export for records as the spool holds them: each line
// one record's JSON as its writer sealed it (the bytes its hash was
// computed over) or, for a record a sidecar sent, as the server checked
// it. It spares a decode and an encode per record, most of what a server
// spent per decision it exported to a file (bench/README.md, Cost of
// audit export).
func (s *fileSink) ExportLines(ctx context.Context, lines [][]byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sink: file: %w", err)
	}
	n := 0
	for _, l := range lines {
		n += len(l) + 1
	}
	if n == 0 {
		return nil
	}
	buf := make([]byte, 0, n)
	for _, l := range lines {
		if len(l) == 0 || bytes.IndexByte(l, '\n') >= 0 {
			return fmt.Errorf("sink: file: a spooled line that is not one record")
		}
		buf = append(append(buf, l...), '\n')
	}
	return s.write(buf)
}

// write appends whole lines b to the active file, rotating it first if
// due, and fsyncs it; a failed write is cut back off.
func (s *fileSink) write(b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("sink: file: %s: sink closed", s.c.path)
	}
	if s.f == nil {
		if err := s.openLocked(); err != nil {
			return err
		}
	}
	if s.size > 0 && (s.size+int64(len(b)) > s.c.maxSize || (s.c.maxAge > 0 && s.now().Sub(s.opened) >= s.c.maxAge)) {
		if err := s.rotateLocked(); err != nil {
			return err
		}
		if err := s.openLocked(); err != nil {
			return err
		}
	}
	if _, err := s.f.Write(b); err != nil {
		if terr := s.f.Truncate(s.size); terr != nil {
			err = errors.Join(err, terr)
		}
		return fmt.Errorf("sink: file: writing %s: %w", s.c.path, err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("sink: file: fsync %s: %w", s.c.path, err)
	}
	s.size += int64(len(b))
	return nil
}

// rotateLocked renames the active file to its rotated name, fsyncs the
// directory so the rename survives a crash, and prunes the oldest rotated
// files beyond max-files.
func (s *fileSink) rotateLocked() error {
	if s.f != nil {
		if err := s.f.Close(); err != nil {
			return fmt.Errorf("sink: file: closing %s: %w", s.c.path, err)
		}
		s.f = nil
	}
	at := s.now().UTC()
	var name string
	for {
		name = s.rotatedName(at)
		if _, err := os.Lstat(name); errors.Is(err, fs.ErrNotExist) {
			break
		}
		at = at.Add(time.Nanosecond) // two rotations within one clock tick
	}
	if err := os.Rename(s.c.path, name); err != nil {
		return fmt.Errorf("sink: file: rotating %s: %w", s.c.path, err)
	}
	if err := syncDir(filepath.Dir(s.c.path)); err != nil {
		return err
	}
	return s.pruneLocked()
}

// rotatedName is audit-<UTC time>.jsonl for audit.jsonl.
func (s *fileSink) rotatedName(at time.Time) string {
	ext := filepath.Ext(s.c.path)
	return strings.TrimSuffix(s.c.path, ext) + "-" + at.Format(rotatedLayout) + ext
}

// rotated returns the rotated files of the active one, oldest first.
func (s *fileSink) rotated() ([]string, error) {
	ext := filepath.Ext(s.c.path)
	prefix := filepath.Base(strings.TrimSuffix(s.c.path, ext)) + "-"
	ents, err := os.ReadDir(filepath.Dir(s.c.path))
	if err != nil {
		return nil, fmt.Errorf("sink: file: listing rotated files: %w", err)
	}
	var out []string
	for _, e := range ents {
		n := e.Name()
		if !e.Type().IsRegular() || !strings.HasPrefix(n, prefix) || !strings.HasSuffix(n, ext) {
			continue
		}
		stamp := strings.TrimSuffix(strings.TrimPrefix(n, prefix), ext)
		if _, err := time.Parse(rotatedLayout, stamp); err != nil || len(stamp) != len(rotatedLayout) {
			continue // not ours
		}
		out = append(out, filepath.Join(filepath.Dir(s.c.path), n))
	}
	sort.Strings(out)
	return out, nil
}

// pruneLocked removes the oldest rotated files beyond max-files.
func (s *fileSink) pruneLocked() error {
	if s.c.maxFiles == 0 {
		return nil
	}
	old, err := s.rotated()
	if err != nil {
		return err
	}
	for len(old) > s.c.maxFiles {
		if err := os.Remove(old[0]); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("sink: file: pruning %s: %w", old[0], err)
		}
		old = old[1:]
	}
	return nil
}

// syncDir fsyncs a directory, making renames and creations in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sink: file: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sink: file: fsync %s: %w", dir, err)
	}
	return nil
}

// Close closes the active file.
func (s *fileSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	if err != nil {
		return fmt.Errorf("sink: file: closing %s: %w", s.c.path, err)
	}
	return nil
}
