package policy

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// decisionRecord has the fields of OPA's decision logs, so existing
// consumers read Sigil's unchanged.
type decisionRecord struct {
	Labels     map[string]string            `json:"labels"`
	DecisionID string                       `json:"decision_id"`
	Bundles    map[string]map[string]string `json:"bundles,omitempty"`
	Path       string                       `json:"path"`
	Input      *Input                       `json:"input"`
	Result     *bool                        `json:"result,omitempty"`
	Error      string                       `json:"error,omitempty"`
	Timestamp  time.Time                    `json:"timestamp"`
}

// decisionLog writes decisions as JSON lines. Writes are buffered and
// flushed by flush or when the buffer fills; it never drops a record.
type decisionLog struct {
	mu  sync.Mutex
	buf *bufio.Writer
	w   io.Writer // under buf: flushed and closed with it when it can be
	// labels are the records' labels by the deciding engine's mode: the
	// given labels plus "mode" (enforce or dryrun), so consumers of OPA
	// decision logs can tell a dry-run decision from the enforced one.
	labels map[string]map[string]string
}

// newDecisionLog returns a log writing to w, with labels on every record.
func newDecisionLog(w io.Writer, labels map[string]string) *decisionLog {
	byMode := map[string]map[string]string{}
	for _, mode := range []string{ModeEnforce, ModeDryRun} {
		m := make(map[string]string, len(labels)+1)
		for k, v := range labels {
			m[k] = v
		}
		m["mode"] = mode
		byMode[mode] = m
	}
	return &decisionLog{buf: bufio.NewWriterSize(w, 64<<10), w: w, labels: byMode}
}

// log writes one decision.
func (l *decisionLog) log(in *Input, d Decision, at time.Time) {
	rec := decisionRecord{Labels: l.labels[d.Mode], DecisionID: d.ID, Path: Path, Input: in, Timestamp: at.UTC()}
	if d.Revision != "" {
		rec.Bundles = map[string]map[string]string{"sigil": {"revision": d.Revision}}
	}
	if d.Err != nil {
		rec.Error = d.Err.Error()
	} else {
		allow := d.Allow
		rec.Result = &allow
	}
	line, err := json.Marshal(&rec)
	if err != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(line)
	l.buf.WriteByte('\n')
}

// flusher is a writer with its own buffer (the sidecar's log files).
type flusher interface{ Flush() error }

// flush writes out buffered records, through w's own buffer if it has one.
func (l *decisionLog) flush() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	err := l.buf.Flush()
	if f, ok := l.w.(flusher); ok {
		err = errors.Join(err, f.Flush())
	}
	if err != nil {
		return fmt.Errorf("policy: decision log: %w", err)
	}
	return nil
}

// close flushes, then closes w if it is an io.Closer.
func (l *decisionLog) close() error {
	err := l.flush()
	if c, ok := l.w.(io.Closer); ok {
		l.mu.Lock()
		defer l.mu.Unlock()
		if cerr := c.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("policy: decision log: %w", cerr))
		}
	}
	return err
}
