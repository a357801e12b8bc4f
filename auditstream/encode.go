package auditstream

import (
	"bytes"
	"encoding/json"
	"strconv"

	"github.com/sigil-mesh/sigil/internal/jsonenc"
)

// appendRecord appends r's JSON exactly as json.Marshal encodes it, without
// reflection (a sidecar encodes one record per request). It reports false
// when r holds something it does not encode itself (a string json.Marshal
// would escape, a raw field with HTML characters): the caller then uses
// json.Marshal. TestAppendRecordIsMarshal and FuzzAppendRecord hold it to
// json.Marshal byte for byte.
func appendRecord(b []byte, r *Record) ([]byte, bool) {
	ok := true
	var keys [16]string // the sorted keys of a map, off the heap for small ones
	str := func(s string) {
		var fits bool
		b, fits = jsonenc.AppendString(b, s)
		ok = ok && fits
	}
	strMap := func(m map[string]string) {
		var fits bool
		b, fits = jsonenc.AppendStringMap(b, m)
		ok = ok && fits
	}
	raw := func(m json.RawMessage) {
		if jsonenc.MarshalsAsIs(m) {
			// Already compact (policy's appendInput writes the input so):
			// no json.Compact pass on the hot path (see MarshalsAsIs).
			b = append(b, m...)
			return
		}
		if bytes.ContainsAny(m, "<>&") || bytes.Contains(m, []byte("\u2028")) || bytes.Contains(m, []byte("\u2029")) {
			ok = false // json.Marshal escapes these inside a raw message too
			return
		}
		buf := bytes.NewBuffer(b)
		if json.Compact(buf, m) != nil {
			ok = false
			return
		}
		b = buf.Bytes()
	}
	b = append(b, `{"decision_id":`...)
	str(r.DecisionID)
	b = append(b, `,"timestamp":"`...)
	// AppendText is MarshalJSON without the quotes and the allocation.
	b, err := r.Timestamp.AppendText(b)
	if err != nil {
		return b, false
	}
	b = append(b, '"')
	b = append(b, `,"path":`...)
	str(r.Path)
	if len(r.Labels) > 0 {
		b = append(b, `,"labels":`...)
		strMap(r.Labels)
	}
	if len(r.Input) > 0 {
		b = append(b, `,"input":`...)
		raw(r.Input)
	}
	if len(r.Result) > 0 {
		b = append(b, `,"result":`...)
		raw(r.Result)
	}
	if r.Error != "" {
		b = append(b, `,"error":`...)
		str(r.Error)
	}
	if len(r.Bundles) > 0 {
		b = append(b, `,"bundles":{`...)
		for i, k := range jsonenc.AppendSortedKeys(keys[:0], r.Bundles) {
			if i > 0 {
				b = append(b, ',')
			}
			str(k)
			b = append(b, `:{"revision":`...)
			str(r.Bundles[k].Revision)
			b = append(b, '}')
		}
		b = append(b, '}')
	}
	if len(r.Erased) > 0 {
		b = append(b, `,"erased":[`...)
		for i, e := range r.Erased {
			if i > 0 {
				b = append(b, ',')
			}
			str(e)
		}
		b = append(b, ']')
	}
	m := &r.Sigil
	b = append(b, `,"sigil":{"type":`...)
	str(m.Type)
	for _, f := range [...]struct{ name, v string }{{`,"mode":`, m.Mode}, {`,"actor":`, m.Actor}, {`,"subject":`, m.Subject}} {
		if f.v != "" {
			b = append(b, f.name...)
			str(f.v)
		}
	}
	if len(m.Details) > 0 {
		b = append(b, `,"details":`...)
		strMap(m.Details)
	}
	if m.Lost != 0 {
		b = append(b, `,"lost":`...)
		b = strconv.AppendInt(b, m.Lost, 10)
	}
	b = append(b, `,"writer":`...)
	str(m.Writer)
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, m.Seq, 10)
	b = append(b, `,"prev_hash":`...)
	str(m.Prev)
	b = append(b, `,"hash":`...)
	str(m.Hash)
	b = append(b, "}}"...)
	return b, ok
}
