// Package audit writes Sigil's audit trail: one JSON object per line, in an
// append-only file, each line chained to the one before it by a SHA-256 hash
// so that a removed, reordered or edited line is found by Verify.
//
// The trail is written before the action it records is answered: if an
// event cannot be written, the caller fails the action rather than act
// without a record.
package audit

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Event types. Consumers filter on these; they are never renamed.
const (
	AgentAttested   = "agent.attested"
	AgentRefused    = "agent.refused"
	AgentRenewed    = "agent.renewed"
	AgentEvicted    = "agent.evicted"
	TokenCreated    = "token.created"
	TokenUsed       = "token.used"
	EntryCreated    = "entry.created"
	EntryDeleted    = "entry.deleted"
	X509SVIDIssued  = "x509svid.issued"
	X509SVIDRefused = "x509svid.refused"
	JWTSVIDIssued   = "jwtsvid.issued"
	CAPrepared      = "ca.prepared"
	CAActivated     = "ca.activated"
	CARootCreated   = "ca.root.created"
	JWTKeyPrepared  = "ca.jwtkey.prepared"
	JWTKeyActivated = "ca.jwtkey.activated"
	ServerStarted   = "server.started"
	ServerStopped   = "server.stopped"
)

// Event is one line of the trail.
type Event struct {
	Seq  int64     `json:"seq"`
	Time time.Time `json:"time"`
	Type string    `json:"type"`
	// Actor is who caused the event: an agent's SPIFFE ID, or "admin".
	Actor string `json:"actor,omitempty"`
	// Subject is the identity the event is about, such as the SVID's ID.
	Subject string            `json:"subject,omitempty"`
	Details map[string]string `json:"details,omitempty"`
	// Prev is the hash of the line before (empty for the first line).
	Prev string `json:"prev"`
	// Hash is SHA-256 over Prev and this event with Hash left empty.
	Hash string `json:"hash"`
}

// Log appends events to a file. It is safe for concurrent use.
type Log struct {
	mu   sync.Mutex
	f    *os.File
	seq  int64
	prev string
	now  func() time.Time
}

// Open opens (or creates, 0600) the trail at path and continues its chain.
func Open(path string, now func() time.Time) (*Log, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: opening %s: %w", path, err)
	}
	last, err := Verify(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("audit: %s: %w", path, err)
	}
	return &Log{f: f, seq: last.Seq, prev: last.Hash, now: now}, nil
}

// Append writes the events in order and syncs them to disk before it
// returns. Seq, Time, Prev and Hash are filled in here.
func (l *Log) Append(events ...Event) error {
	if len(events) == 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var buf bytes.Buffer
	seq, prev := l.seq, l.prev
	now := l.now().UTC()
	for _, e := range events {
		seq++
		e.Seq, e.Time, e.Prev, e.Hash = seq, now, prev, ""
		h, line, err := seal(e)
		if err != nil {
			return err
		}
		buf.Write(line)
		buf.WriteByte('\n')
		prev = h
	}
	if _, err := l.f.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("audit: writing: %w", err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("audit: syncing: %w", err)
	}
	l.seq, l.prev = seq, prev
	return nil
}

// Close closes the file.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}

// seal computes e's hash and returns it with the final JSON line.
func seal(e Event) (string, []byte, error) {
	e.Hash = ""
	body, err := json.Marshal(e)
	if err != nil {
		return "", nil, fmt.Errorf("audit: encoding: %w", err)
	}
	sum := sha256.Sum256(append([]byte(e.Prev), body...))
	e.Hash = hex.EncodeToString(sum[:])
	line, err := json.Marshal(e)
	if err != nil {
		return "", nil, fmt.Errorf("audit: encoding: %w", err)
	}
	return e.Hash, line, nil
}

// ErrBroken means the chain of hashes does not hold: a line was changed,
// removed or reordered.
var ErrBroken = errors.New("audit: chain broken")

// Verify reads a whole trail and checks every line's hash and its link to
// the line before. It returns the last event (zero for an empty trail).
func Verify(r io.Reader) (Event, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	var last Event
	for n := 1; sc.Scan(); n++ {
		var e Event
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			return last, fmt.Errorf("audit: line %d: %w", n, err)
		}
		if e.Prev != last.Hash || e.Seq != last.Seq+1 {
			return last, fmt.Errorf("%w at line %d (seq %d): does not follow seq %d", ErrBroken, n, e.Seq, last.Seq)
		}
		h, _, err := seal(e)
		if err != nil {
			return last, err
		}
		if h != e.Hash {
			return last, fmt.Errorf("%w at line %d (seq %d): hash does not match the content", ErrBroken, n, e.Seq)
		}
		last = e
	}
	if err := sc.Err(); err != nil {
		return last, fmt.Errorf("audit: reading: %w", err)
	}
	return last, nil
}
