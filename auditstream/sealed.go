package auditstream

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"strconv"

	"github.com/sigil-mesh/sigil/internal/jsonenc"
)

// ParseSealed reads a record line in the one form a sealed record takes
// when its writer encodes it (AppendSealed: the fields in Record's order,
// empty ones left out, no whitespace, every string printable ASCII that
// needs no escape, maps with sorted keys, raw values compact) and returns
// the record's envelope: DecisionID, Timestamp, Path, Error and Sigil
// (Details included). The content fields (Labels, Input, Result, Bundles,
// Erased) are checked for that form but not kept: they are left empty.
//
// It reports false for anything else, and the caller decodes the line
// with encoding/json, as it would without ParseSealed. When it reports
// true, json.Unmarshal of line gives a record with the same envelope, and
// encoding that record (AppendChecked, json.Marshal) gives line back byte
// for byte: the line can be passed on as it is and its hash checked over
// its own bytes (LineChecker). FuzzParseSealed holds it to encoding/json.
//
// On the hot path: the agent reads each sidecar record's writer with it
// and the server each record's envelope (about a tenth of a
// json.Unmarshal of the record; bench/README.md, session 25).
func ParseSealed(line []byte) (Record, bool) {
	p := sealedReader{b: line}
	var r Record
	p.lit(`{"decision_id":`)
	r.DecisionID = p.str()
	p.lit(`,"timestamp":`)
	p.timestamp(&r)
	p.lit(`,"path":`)
	r.Path = p.str()
	if p.opt(`,"labels":`) {
		p.strMap(false)
	}
	if p.opt(`,"input":`) {
		p.raw()
	}
	if p.opt(`,"result":`) {
		p.raw()
	}
	if p.opt(`,"error":`) {
		r.Error = p.nonEmpty()
	}
	if p.opt(`,"bundles":{`) {
		var last []byte
		for first := true; p.i >= 0; first = false {
			k := p.strSpan()
			if !first && bytes.Compare(k, last) <= 0 {
				p.fail() // json.Marshal sorts a map's keys, once each
			}
			last = k
			p.lit(`:{"revision":`)
			p.strSpan()
			p.lit(`}`)
			if !p.opt(`,`) {
				break
			}
		}
		p.lit(`}`)
	}
	if p.opt(`,"erased":[`) {
		for p.i >= 0 {
			p.strSpan()
			if !p.opt(`,`) {
				break
			}
		}
		p.lit(`]`)
	}
	m := &r.Sigil
	p.lit(`,"sigil":{"type":`)
	m.Type = p.str()
	if p.opt(`,"mode":`) {
		m.Mode = p.nonEmpty()
	}
	if p.opt(`,"actor":`) {
		m.Actor = p.nonEmpty()
	}
	if p.opt(`,"subject":`) {
		m.Subject = p.nonEmpty()
	}
	if p.opt(`,"details":`) {
		m.Details = p.strMap(true)
	}
	if p.opt(`,"lost":`) {
		if m.Lost = p.int(); m.Lost == 0 {
			p.fail() // omitempty: a zero is left out
		}
	}
	p.lit(`,"writer":`)
	m.Writer = p.str()
	p.lit(`,"seq":`)
	m.Seq = p.int()
	p.lit(`,"prev_hash":`)
	m.Prev = p.str()
	p.lit(`,"hash":`)
	m.Hash = p.str()
	p.lit(`}}`)
	if p.i != len(line) {
		return Record{}, false
	}
	return r, true
}

// sealedReader is ParseSealed's cursor: each step reads what it expects
// at b[i:] or fails (i < 0, after which every step does nothing).
type sealedReader struct {
	b []byte
	i int
}

// lit reads s.
func (p *sealedReader) lit(s string) {
	if p.i < 0 || !bytes.HasPrefix(p.b[p.i:], []byte(s)) {
		p.fail()
		return
	}
	p.i += len(s)
}

// opt reads s if it comes next, and reports whether it did.
func (p *sealedReader) opt(s string) bool {
	if p.i < 0 || !bytes.HasPrefix(p.b[p.i:], []byte(s)) {
		return false
	}
	p.i += len(s)
	return true
}

// fail marks the line as not in the sealed form; p.i < 0 stops every
// later step.
func (p *sealedReader) fail() { p.i = -1 }

// strSpan reads a string of plain bytes (jsonenc.PlainPrefix) and returns
// its content.
func (p *sealedReader) strSpan() []byte {
	if p.i < 0 || p.i >= len(p.b) || p.b[p.i] != '"' {
		p.fail()
		return nil
	}
	start := p.i + 1
	end := start + jsonenc.PlainPrefix(p.b[start:])
	if end >= len(p.b) || p.b[end] != '"' {
		p.fail()
		return nil
	}
	p.i = end + 1
	return p.b[start:end]
}

// str is strSpan as a string.
func (p *sealedReader) str() string { return string(p.strSpan()) }

// nonEmpty is str for a field left out when empty (omitempty).
func (p *sealedReader) nonEmpty() string {
	s := p.strSpan()
	if len(s) == 0 {
		p.fail()
	}
	return string(s)
}

// strMap reads a non-empty map[string]string with sorted keys (an empty
// one is left out), returning it when keep is set.
func (p *sealedReader) strMap(keep bool) map[string]string {
	p.lit(`{`)
	var m map[string]string
	if keep {
		m = map[string]string{}
	}
	var last []byte
	for first := true; p.i >= 0; first = false {
		k := p.strSpan()
		if !first && bytes.Compare(k, last) <= 0 {
			p.fail()
		}
		last = k
		p.lit(`:`)
		v := p.strSpan()
		if keep && p.i >= 0 {
			m[string(k)] = string(v)
		}
		if !p.opt(`,`) {
			break
		}
	}
	p.lit(`}`)
	return m
}

// raw reads a json.RawMessage field as appendRecord writes it: valid and
// compact, without the characters json.Marshal escapes inside one.
func (p *sealedReader) raw() {
	if p.i < 0 {
		return
	}
	n, ok := jsonenc.CompactPrefix(p.b[p.i:])
	v := p.b[p.i : p.i+n]
	if !ok || bytes.ContainsAny(v, "<>&") || bytes.Contains(v, []byte("\u2028")) || bytes.Contains(v, []byte("\u2029")) {
		p.fail()
		return
	}
	p.i += n
}

// int reads an int64 written as strconv.AppendInt writes it.
func (p *sealedReader) int() int64 {
	if p.i < 0 {
		return 0
	}
	end := p.i
	for end < len(p.b) && (p.b[end] == '-' || p.b[end] >= '0' && p.b[end] <= '9') {
		end++
	}
	tok := p.b[p.i:end]
	v, err := strconv.ParseInt(string(tok), 10, 64)
	var buf [24]byte
	if err != nil || !bytes.Equal(strconv.AppendInt(buf[:0], v, 10), tok) {
		p.fail()
		return 0
	}
	p.i = end
	return v
}

// timestamp reads r's Timestamp as encoding/json decodes it
// (time.Time.UnmarshalJSON) and wants it written as appendRecord writes
// it (time.Time.AppendText).
func (p *sealedReader) timestamp(r *Record) {
	start := p.i
	s := p.strSpan()
	if p.i < 0 || r.Timestamp.UnmarshalJSON(p.b[start:p.i]) != nil {
		p.fail()
		return
	}
	var buf [64]byte
	if b, err := r.Timestamp.AppendText(buf[:0]); err != nil || !bytes.Equal(b, s) {
		p.fail()
	}
}

// LineChecker checks the hash of lines ParseSealed read, over the lines'
// own bytes. Its zero value is ready; it is not safe for concurrent use.
type LineChecker struct {
	digest hash.Hash
	sum    [2 * sha256.Size]byte
}

// Check reports whether r's hash (r as ParseSealed returned it for line)
// is the one line gives: SHA-256 over r.Sigil.Prev and line with its hash
// value emptied, as AppendSealed computes it when it seals the record.
// The error is AppendChecked's.
func (c *LineChecker) Check(line []byte, r *Record) error {
	if c.digest == nil {
		c.digest = sha256.New()
	}
	// line ends `"hash":"` + hash + `"}}` (ParseSealed read it so).
	cut := len(line) - len(r.Sigil.Hash) - len(`"}}`)
	if cut < 0 || string(line[cut:cut+len(r.Sigil.Hash)]) != r.Sigil.Hash {
		return fmt.Errorf("auditstream: record %s: not a line ParseSealed read", r.DecisionID)
	}
	c.digest.Reset()
	c.digest.Write([]byte(r.Sigil.Prev))
	c.digest.Write(line[:cut])
	c.digest.Write([]byte(`"}}`))
	var sum [sha256.Size]byte
	hex.Encode(c.sum[:], c.digest.Sum(sum[:0]))
	if string(c.sum[:]) != r.Sigil.Hash {
		return fmt.Errorf("auditstream: record %s (writer %s seq %d): hash does not match its content", r.DecisionID, r.Sigil.Writer, r.Sigil.Seq)
	}
	return nil
}
