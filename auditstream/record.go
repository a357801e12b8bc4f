// Package auditstream holds the one audit stream Sigil exports: every
// authorization decision a sidecar makes and every event of the CA's trail
// (attestation, issuance, entry and policy changes, token use, rotation),
// each as one Record.
//
// A Record is an OPA decision-log event (the fields OPA's decision-log
// plugin uploads: decision_id, timestamp, path, labels, input, result,
// bundles, erased), so existing decision-log receivers read it unchanged,
// with Sigil's own fields under "sigil": what kind of record it is, who
// caused it, and its place in its writer's hash chain. Each writer (a
// sidecar, the server) numbers its records 1, 2, 3... and each record
// carries the hash of the one before it, so a record removed, edited or
// reordered anywhere along the export is found by Verify, writer by
// writer.
package auditstream

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"time"

	"github.com/google/uuid"
)

// Record types (Meta.Type). CA events keep the type of their audit.Event
// (x509svid.issued, agent.attested, ...).
const (
	// TypeDecision is an authorization decision of a sidecar.
	TypeDecision = "decision"
	// TypeGap stands for records a writer or an exporter had to drop
	// (its spool was full): Meta.Lost says how many.
	TypeGap = "gap"
)

// Decision modes (Meta.Mode).
const (
	ModeEnforce = "enforce"
	ModeDryRun  = "dryrun"
)

// PathDecision is the path of a decision record, as OPA's decision logs
// name the rule asked ("sigil/authz/allow"). CA events have path
// "sigil/audit/<type>" (PathEvent).
const PathDecision = "sigil/authz/allow"

// PathEvent returns the path of a CA event record of type typ.
func PathEvent(typ string) string { return "sigil/audit/" + typ }

// Record is one line of the audit stream, in the shape of an OPA
// decision-log event (https://www.openpolicyagent.org/docs/management-decision-logs).
type Record struct {
	// DecisionID is unique across the stream: a decision's id, or for
	// other records an id made when the record was.
	DecisionID string    `json:"decision_id"`
	Timestamp  time.Time `json:"timestamp"`
	// Path is the rule asked (PathDecision) or PathEvent(type).
	Path   string            `json:"path"`
	Labels map[string]string `json:"labels,omitempty"`
	// Input is the decision's input document (package policy's Input),
	// after masking; for CA events, absent.
	Input json.RawMessage `json:"input,omitempty"`
	// Result is the decision (true or false); absent when evaluation
	// failed (Error says why) and for CA events.
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
	// Bundles names the policy revision decided under, as OPA does:
	// {"sigil": {"revision": "..."}}.
	Bundles map[string]Bundle `json:"bundles,omitempty"`
	// Erased lists the input paths masked before the record left the
	// sidecar (OPA's "erased", e.g. "/input/request/headers/authorization").
	Erased []string `json:"erased,omitempty"`
	Sigil  Meta     `json:"sigil"`
}

// Bundle is the revision of a policy bundle, as OPA's decision logs
// record it.
type Bundle struct {
	Revision string `json:"revision"`
}

// Meta is Sigil's part of a Record.
type Meta struct {
	// Type is TypeDecision, TypeGap or the CA event's type.
	Type string `json:"type"`
	// Mode, for decisions, is ModeEnforce or ModeDryRun (a dry-run
	// policy's decision, which never blocks).
	Mode string `json:"mode,omitempty"`
	// Actor is who caused the record: the caller's SPIFFE ID for a
	// decision, an agent's SPIFFE ID or "admin" for a CA event.
	Actor string `json:"actor,omitempty"`
	// Subject is what a CA event is about (the SVID's SPIFFE ID, ...).
	Subject string `json:"subject,omitempty"`
	// Details are a CA event's details (never a secret: tokens appear
	// only as a SHA-256 prefix).
	Details map[string]string `json:"details,omitempty"`
	// Lost, for a gap record, is how many records were dropped.
	Lost int64 `json:"lost,omitempty"`
	// Writer names the hash chain the record belongs to: the sidecar's
	// or the server's SPIFFE ID and an instance suffix.
	Writer string `json:"writer"`
	// Seq numbers the writer's records from 1, without holes.
	Seq int64 `json:"seq"`
	// Prev is the Hash of the writer's record Seq-1 ("" for Seq 1).
	Prev string `json:"prev_hash"`
	// Hash is hex SHA-256 over Prev and the record's JSON with Hash "".
	Hash string `json:"hash"`
}

// hashOf returns r's hash: SHA-256 over r.Sigil.Prev followed by r's JSON
// encoding with Sigil.Hash empty.
func hashOf(r Record) (string, error) {
	r.Sigil.Hash = ""
	body, err := json.Marshal(&r)
	if err != nil {
		return "", fmt.Errorf("auditstream: encoding record %s: %w", r.DecisionID, err)
	}
	sum := sha256.Sum256(append([]byte(r.Sigil.Prev), body...))
	return hex.EncodeToString(sum[:]), nil
}

// Chain numbers and links one writer's records. It is not safe for
// concurrent use; its owner serializes Seal.
type Chain struct {
	writer string
	seq    int64
	prev   string
	digest hash.Hash // reused by AppendSealed; nil until first used
	// prevBuf is AppendSealed's copy of prev, hashed without converting.
	prevBuf []byte
}

// NewChain returns the chain of writer, continuing after the record with
// sequence number seq and hash prev (0 and "" for a new chain).
func NewChain(writer string, seq int64, prev string) *Chain {
	return &Chain{writer: writer, seq: seq, prev: prev}
}

// Seal gives r the chain's next sequence number, the previous hash and
// its own hash, and advances the chain.
func (c *Chain) Seal(r *Record) error {
	r.Sigil.Writer = c.writer
	r.Sigil.Seq = c.seq + 1
	r.Sigil.Prev = c.prev
	h, err := hashOf(*r)
	if err != nil {
		return err
	}
	r.Sigil.Hash = h
	c.seq, c.prev = r.Sigil.Seq, h
	return nil
}

// hashSuffix ends a record's JSON with Hash empty: Hash is the last
// field of Meta, Meta the last of Record.
var hashSuffix = []byte(`"hash":""}}`)

// SealJSON is Seal that also returns r's JSON encoding (what json.Marshal
// gives for the sealed r), encoding r once instead of twice.
func (c *Chain) SealJSON(r *Record) ([]byte, error) { return c.AppendSealed(nil, r) }

// AppendSealed is SealJSON appending r's JSON to dst (whose contents before
// len(dst) it leaves as they are); on error it returns dst unchanged.
//
// On the hot path (one call per decision a sidecar records): the record is
// encoded once, into the caller's buffer, and hashed there, with the hash
// written in place, and the chain's digest reused, so a sealed record
// costs no allocation of its own (BenchmarkAuditRecord, bench/README.md).
// TestSealJSONIsSealThenMarshal holds it to Seal and json.Marshal.
func (c *Chain) AppendSealed(dst []byte, r *Record) ([]byte, error) {
	r.Sigil.Writer = c.writer
	r.Sigil.Seq = c.seq + 1
	r.Sigil.Prev = c.prev
	r.Sigil.Hash = ""
	start := len(dst)
	line, ok := appendRecord(dst, r)
	if !ok {
		body, err := json.Marshal(r)
		if err != nil {
			return dst, fmt.Errorf("auditstream: encoding record %s: %w", r.DecisionID, err)
		}
		line = append(line[:start], body...)
	}
	body := line[start:]
	if !bytes.HasSuffix(body, hashSuffix) {
		return dst, fmt.Errorf("auditstream: record %s: encoding does not end with its hash field", r.DecisionID)
	}
	if c.digest == nil {
		c.digest = sha256.New()
	}
	c.digest.Reset()
	c.prevBuf = append(c.prevBuf[:0], r.Sigil.Prev...) // a []byte(string) for the interface would allocate
	c.digest.Write(c.prevBuf)
	c.digest.Write(body)
	// The sum lands after the line, then on the stack, and goes back hex
	// encoded: no buffer of its own on the heap.
	n := len(line) - 3
	line = c.digest.Sum(line[:n])
	var sum [sha256.Size]byte
	copy(sum[:], line[n:])
	line = hex.AppendEncode(line[:n], sum[:])
	r.Sigil.Hash = string(line[len(line)-2*sha256.Size:])
	c.seq, c.prev = r.Sigil.Seq, r.Sigil.Hash
	return append(line, `"}}`...), nil
}

// Last returns the sequence number and hash of the last record sealed.
func (c *Chain) Last() (int64, string) { return c.seq, c.prev }

// Check reports whether r's hash is the one its content gives; it says
// nothing of r's link to the record before (see Verify).
func Check(r Record) error {
	h, err := hashOf(r)
	if err != nil {
		return err
	}
	if h != r.Sigil.Hash {
		return fmt.Errorf("auditstream: record %s (writer %s seq %d): hash does not match its content", r.DecisionID, r.Sigil.Writer, r.Sigil.Seq)
	}
	return nil
}

// AppendChecked appends r's JSON line (its encoding as AppendSealed and
// json.Marshal give it, without a newline) to dst once r's hash is the
// one its content gives (Check); on error it returns dst unchanged. The
// line is encoded from r, not copied from what r was decoded from, so
// what is passed on is what was checked (a duplicate key or extra
// whitespace in a sender's line does not travel), and r is encoded once
// for both (the server ingests every decision of the mesh this way).
func AppendChecked(dst []byte, r *Record) ([]byte, error) {
	want := r.Sigil.Hash
	c := Chain{writer: r.Sigil.Writer, seq: r.Sigil.Seq - 1, prev: r.Sigil.Prev}
	line, err := c.AppendSealed(dst, r)
	got := r.Sigil.Hash
	r.Sigil.Hash = want
	if err != nil {
		return dst, err
	}
	if got != want {
		return dst, fmt.Errorf("auditstream: record %s (writer %s seq %d): hash does not match its content", r.DecisionID, r.Sigil.Writer, r.Sigil.Seq)
	}
	return line, nil
}

// Writer returns the name of the chain.
func (c *Chain) Writer() string { return c.writer }

// NewID returns a random (version 4) UUID for a record that is not a
// decision (a CA event, a gap), in the form decision ids have.
func NewID() string { return uuid.NewString() }
