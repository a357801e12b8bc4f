package policy

import (
	"bufio"
	"encoding/json"
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

// JSONLogger writes decisions as JSON lines. Writes are buffered and
// flushed by Flush or when the buffer fills; it never drops a record.
type JSONLogger struct {
	mu     sync.Mutex
	w      *bufio.Writer
	labels map[string]string
}

// NewJSONLogger returns a logger writing to w, with labels on every record
// (OPA puts the instance id and version there; Sigil adds the service).
func NewJSONLogger(w io.Writer, labels map[string]string) *JSONLogger {
	return &JSONLogger{w: bufio.NewWriterSize(w, 64<<10), labels: labels}
}

// LogDecision implements DecisionLogger.
func (l *JSONLogger) LogDecision(in *Input, d Decision, at time.Time) {
	rec := decisionRecord{Labels: l.labels, DecisionID: d.ID, Path: Path, Input: in, Timestamp: at.UTC()}
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
	l.w.Write(line)
	l.w.WriteByte('\n')
}

// Flush writes out buffered records.
func (l *JSONLogger) Flush() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Flush()
}
