// Package audit writes Sigil's audit trail: one JSON object per line, in an
// append-only file, each line chained to the one before it by a SHA-256 hash
// so that a removed, reordered or edited line is found by Verify.
//
// The trail is written before the action it records is answered: if an
// event cannot be written, the caller fails the action rather than act
// without a record.
//
// A record of an action that changes stored state is an intent (Intent
// set), written before the store is asked. Once the store answers, an
// action.committed or action.aborted record settles it, naming it by
// details intent_seq (and intent_count for a run of intents written
// together). A server killed between the two leaves the intent unsettled;
// at its next start it asks the store whether the action took effect and
// writes the settling record then (reason "reconciled at start-up"). So
// every intent ends settled, and the trail matches the store. Records of
// older trails carry no Intent and need no settling.
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
	"sort"
	"strconv"
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
	// ActionCommitted and ActionAborted settle intents: the action took
	// effect in the store, or did not (details reason says why).
	ActionCommitted = "action.committed"
	ActionAborted   = "action.aborted"
)

// Details keys of settling records.
const (
	DetailIntentSeq   = "intent_seq"
	DetailIntentCount = "intent_count"
	DetailReason      = "reason"
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
	// Intent marks a record written before the store change it describes;
	// a later action.committed or action.aborted record settles it.
	Intent bool `json:"intent,omitempty"`
	// Prev is the hash of the line before (empty for the first line).
	Prev string `json:"prev"`
	// Hash is SHA-256 over Prev and this event with Hash left empty.
	Hash string `json:"hash"`
}

// Log appends events to a file. It is safe for concurrent use.
type Log struct {
	mu      sync.Mutex
	f       *os.File
	seq     int64
	prev    string
	now     func() time.Time
	pending map[int64]Event // unsettled intents by seq
	// tee, if set, is given each event once it is on disk (WithTee).
	tee func(Event)
}

// Option sets one of a Log's hooks at construction (see Open).
type Option func(*Log)

// WithTee has every event passed to f, in order, once it is written and
// synced (the server's audit export: package auditstream). f runs under
// the log's lock: it must not block on the network.
func WithTee(f func(Event)) Option {
	return func(l *Log) { l.tee = f }
}

// Open opens (or creates, 0600) the trail at path and continues its chain.
func Open(path string, now func() time.Time, opts ...Option) (*Log, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: opening %s: %w", path, err)
	}
	sum, err := Check(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("audit: %s: %w", path, err)
	}
	pending := map[int64]Event{}
	for _, e := range sum.Pending {
		pending[e.Seq] = e
	}
	l := &Log{f: f, seq: sum.Last.Seq, prev: sum.Last.Hash, now: now, pending: pending}
	for _, o := range opts {
		o(l)
	}
	return l, nil
}

// Pending returns the intents not yet settled, in order: at start-up, the
// actions a stopped server left without an outcome.
func (l *Log) Pending() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Event, 0, len(l.pending))
	for _, e := range l.pending {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out
}

// Intent is a run of intent records written together, to be settled once
// the store has answered.
type Intent struct {
	log         *Log
	first, last int64
}

// Begin appends events as intents (see the package comment) and returns
// the handle that settles them. An error means nothing was written and the
// action must not be taken. With no events there is nothing to settle.
func (l *Log) Begin(events ...Event) (Intent, error) {
	if len(events) == 0 {
		return Intent{}, nil
	}
	for i := range events {
		events[i].Intent = true
	}
	seqs, err := l.append(events)
	if err != nil {
		return Intent{}, err
	}
	return Intent{log: l, first: seqs[0], last: seqs[len(seqs)-1]}, nil
}

// Settle records the outcome of the intents: committed when storeErr is
// nil, aborted with storeErr as the reason otherwise.
func (in Intent) Settle(storeErr error) error {
	if in.log == nil {
		return nil
	}
	if storeErr == nil {
		return in.log.Settle(in.first, in.last, true, "")
	}
	return in.log.Settle(in.first, in.last, false, storeErr.Error())
}

// Settle writes the outcome of the intents first..last (their seqs).
func (l *Log) Settle(first, last int64, committed bool, reason string) error {
	e := Event{Type: ActionAborted, Actor: "server", Details: map[string]string{
		DetailIntentSeq: strconv.FormatInt(first, 10), DetailIntentCount: strconv.FormatInt(last-first+1, 10)}}
	if committed {
		e.Type = ActionCommitted
	}
	if reason != "" {
		e.Details[DetailReason] = reason
	}
	_, err := l.append([]Event{e})
	return err
}

// Append writes the events in order and syncs them to disk before it
// returns. Seq, Time, Prev and Hash are filled in here.
func (l *Log) Append(events ...Event) error {
	if len(events) == 0 {
		return nil
	}
	_, err := l.append(events)
	return err
}

// append writes events and returns their seqs.
func (l *Log) append(events []Event) ([]int64, error) {
	if len(events) == 0 {
		return nil, errors.New("audit: nothing to append")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var buf bytes.Buffer
	seq, prev := l.seq, l.prev
	now := l.now().UTC()
	sealed := make([]Event, len(events))
	for i, e := range events {
		seq++
		e.Seq, e.Time, e.Prev, e.Hash = seq, now, prev, ""
		h, line, err := seal(e)
		if err != nil {
			return nil, err
		}
		buf.Write(line)
		buf.WriteByte('\n')
		prev = h
		e.Hash = h
		sealed[i] = e
	}
	if _, err := l.f.Write(buf.Bytes()); err != nil {
		return nil, fmt.Errorf("audit: writing: %w", err)
	}
	if err := l.f.Sync(); err != nil {
		return nil, fmt.Errorf("audit: syncing: %w", err)
	}
	l.seq, l.prev = seq, prev
	seqs := make([]int64, len(sealed))
	for i, e := range sealed {
		seqs[i] = e.Seq
		trackSettlement(l.pending, e)
		if l.tee != nil {
			l.tee(e)
		}
	}
	return seqs, nil
}

// trackSettlement adds an intent to pending, or removes the intents a
// settling record names.
func trackSettlement(pending map[int64]Event, e Event) {
	if e.Intent {
		pending[e.Seq] = e
		return
	}
	if e.Type != ActionCommitted && e.Type != ActionAborted {
		return
	}
	first, err1 := strconv.ParseInt(e.Details[DetailIntentSeq], 10, 64)
	n, err2 := strconv.ParseInt(e.Details[DetailIntentCount], 10, 64)
	if err1 != nil || err2 != nil {
		return
	}
	for seq := first; seq < first+n; seq++ {
		delete(pending, seq)
	}
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
	sum, err := Check(r)
	return sum.Last, err
}

// Summary is what Check found in a trail.
type Summary struct {
	Last Event
	// Committed and Aborted count settling records.
	Committed, Aborted int
	// Aborts are the action.aborted records, in order.
	Aborts []Event
	// Pending are intents no record settles, in order: a server still
	// running, or one that stopped and has not started again.
	Pending []Event
}

// Check is Verify that also follows intents and their settlement.
func Check(r io.Reader) (Summary, error) {
	pending := map[int64]Event{}
	var sum Summary
	last, err := scan(r, func(e Event) {
		switch e.Type {
		case ActionCommitted:
			sum.Committed++
		case ActionAborted:
			sum.Aborted++
			sum.Aborts = append(sum.Aborts, e)
		}
		trackSettlement(pending, e)
	})
	sum.Last = last
	for _, e := range pending {
		sum.Pending = append(sum.Pending, e)
	}
	sort.Slice(sum.Pending, func(i, j int) bool { return sum.Pending[i].Seq < sum.Pending[j].Seq })
	return sum, err
}

func scan(r io.Reader, each func(Event)) (Event, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	sc.Split(scanLF)
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
		h, line, err := seal(e)
		if err != nil {
			return last, err
		}
		if h != e.Hash {
			return last, fmt.Errorf("%w at line %d (seq %d): hash does not match the content", ErrBroken, n, e.Seq)
		}
		// The hash covers the decoded event, so the line must also be the
		// very bytes the server wrote: anything else (a second JSON object
		// after the first, which line readers such as jq take for an event
		// of its own; spaces; a CR; another escape of the same text) is an
		// edit the hash alone would not see.
		if !bytes.Equal(line, sc.Bytes()) {
			return last, fmt.Errorf("%w at line %d (seq %d): the line is not byte for byte the record written (bytes added or re-encoded)", ErrBroken, n, e.Seq)
		}
		each(e)
		last = e
	}
	if err := sc.Err(); err != nil {
		return last, fmt.Errorf("audit: reading: %w", err)
	}
	return last, nil
}

// scanLF splits at '\n' only: unlike bufio.ScanLines it keeps a '\r', so
// a CR added to a line is seen (and refused) by the byte comparison.
func scanLF(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}
