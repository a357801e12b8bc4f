package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sigil-mesh/sigil/auditstream"
)

// rfc5424 is a message parsed by parse5424, a strict reading of RFC 5424
// section 6's ABNF, for the tests only.
type rfc5424 struct {
	pri                                 int
	timestamp, host, app, procID, msgID string
	sd                                  map[string]map[string]string
	msg                                 string
}

// parse5424 parses one RFC 5424 message strictly: every header field
// PRINTUSASCII within its length, STRUCTURED-DATA elements with SD-NAMEs
// and escaped values, MSG (if any) after one space.
func parse5424(m string) (rfc5424, error) {
	var out rfc5424
	if !strings.HasPrefix(m, "<") {
		return out, errors.New("no PRI")
	}
	end := strings.IndexByte(m, '>')
	if end < 2 || end > 4 {
		return out, errors.New("bad PRI")
	}
	pri, err := strconv.Atoi(m[1:end])
	if err != nil || pri > 191 || (len(m[1:end]) > 1 && m[1] == '0') {
		return out, fmt.Errorf("bad PRI %q", m[1:end])
	}
	out.pri = pri
	m = m[end+1:]
	if !strings.HasPrefix(m, "1 ") {
		return out, errors.New("VERSION is not 1")
	}
	m = m[2:]
	fields := make([]string, 5)
	limits := []int{32 + 6, 255, 48, 128, 32}
	for i := range fields {
		sp := strings.IndexByte(m, ' ')
		if sp < 1 {
			return out, fmt.Errorf("header field %d missing", i)
		}
		fields[i], m = m[:sp], m[sp+1:]
		if !isPrintASCII(fields[i], limits[i]) {
			return out, fmt.Errorf("header field %d %q: not 1..%d PRINTUSASCII", i, fields[i], limits[i])
		}
	}
	out.timestamp, out.host, out.app, out.procID, out.msgID = fields[0], fields[1], fields[2], fields[3], fields[4]
	if out.timestamp != "-" {
		if _, err := time.Parse(time.RFC3339Nano, out.timestamp); err != nil {
			return out, fmt.Errorf("TIMESTAMP: %w", err)
		}
		if dot := strings.IndexByte(out.timestamp, '.'); dot >= 0 && len(strings.TrimRight(out.timestamp[dot+1:], "Z")) > 6 {
			return out, errors.New("TIME-SECFRAC longer than 6 digits")
		}
	}
	out.sd = map[string]map[string]string{}
	if strings.HasPrefix(m, "-") {
		m = m[1:]
	} else {
		for strings.HasPrefix(m, "[") {
			m = m[1:]
			id, rest, ok := sdName(m)
			if !ok {
				return out, fmt.Errorf("bad SD-ID in %q", m)
			}
			params := map[string]string{}
			m = rest
			for strings.HasPrefix(m, " ") {
				name, rest, ok := sdName(m[1:])
				if !ok || !strings.HasPrefix(rest, `="`) {
					return out, fmt.Errorf("bad SD-PARAM in %q", m)
				}
				m = rest[2:]
				var v strings.Builder
				for {
					if m == "" {
						return out, errors.New("unterminated PARAM-VALUE")
					}
					c := m[0]
					if c == '\\' && len(m) > 1 && (m[1] == '"' || m[1] == '\\' || m[1] == ']') {
						v.WriteByte(m[1])
						m = m[2:]
						continue
					}
					if c == '"' {
						m = m[1:]
						break
					}
					if c == ']' {
						return out, errors.New("unescaped ] in PARAM-VALUE")
					}
					v.WriteByte(c)
					m = m[1:]
				}
				if !utf8.ValidString(v.String()) {
					return out, errors.New("PARAM-VALUE not UTF-8")
				}
				params[name] = v.String()
			}
			if !strings.HasPrefix(m, "]") {
				return out, fmt.Errorf("SD-ELEMENT not closed: %q", m)
			}
			m = m[1:]
			out.sd[id] = params
		}
		if len(out.sd) == 0 {
			return out, errors.New("no STRUCTURED-DATA")
		}
	}
	if m != "" {
		if !strings.HasPrefix(m, " ") {
			return out, errors.New("no SP before MSG")
		}
		out.msg = m[1:]
	}
	return out, nil
}

// sdName reads an SD-NAME (1..32 PRINTUSASCII but '=', SP, ']', '"').
func sdName(m string) (name, rest string, ok bool) {
	i := 0
	for i < len(m) && i <= maxSDName && m[i] > 32 && m[i] < 127 && m[i] != '=' && m[i] != ']' && m[i] != '"' {
		i++
	}
	if i == 0 || i > maxSDName {
		return "", m, false
	}
	return m[:i], m[i:], true
}

func TestSyslogFormatRFC5424(t *testing.T) {
	h := syslogHeader{facility: 10, hostname: "node1", appName: "sigil", procID: "42"}
	ts := time.Date(2026, 11, 30, 4, 5, 6, 123456789, time.FixedZone("x", 3600))
	base := func(mut func(*auditstream.Record)) auditstream.Record {
		r := auditstream.Record{DecisionID: "d1", Timestamp: ts, Path: auditstream.PathDecision, Result: json.RawMessage("true"),
			Sigil: auditstream.Meta{Type: auditstream.TypeDecision, Mode: auditstream.ModeEnforce, Actor: "spiffe://td/ns/a/sa/b", Writer: "w", Seq: 7, Prev: "p", Hash: "h"}}
		mut(&r)
		return r
	}
	for _, tt := range []struct {
		name  string
		r     auditstream.Record
		pri   int
		msgID string
		sd    map[string]string
		stamp string
	}{
		{"allow is info", base(func(*auditstream.Record) {}), 10*8 + 6, "decision",
			map[string]string{"decision_id": "d1", "writer": "w", "seq": "7", "hash": "h", "prev_hash": "p", "mode": "enforce", "actor": "spiffe://td/ns/a/sa/b", "type": "decision"},
			"2026-11-30T03:05:06.123456Z"},
		{"deny is notice", base(func(r *auditstream.Record) { r.Result = json.RawMessage("false") }), 85, "decision", nil, ""},
		{"eval error is warning", base(func(r *auditstream.Record) { r.Result = nil; r.Error = "boom" }), 84, "decision", nil, ""},
		{"CA refusal is warning", base(func(r *auditstream.Record) { r.Sigil.Type = "x509svid.refused" }), 84, "x509svid.refused", nil, ""},
		{"CA issuance is info", base(func(r *auditstream.Record) { r.Sigil.Type = "x509svid.issued" }), 86, "x509svid.issued", nil, ""},
		{"gap is error and carries lost", base(func(r *auditstream.Record) { r.Sigil.Type = auditstream.TypeGap; r.Sigil.Lost = 12 }), 83, "gap",
			map[string]string{"lost": "12"}, ""},
		{"escaping of quote, backslash and bracket", base(func(r *auditstream.Record) { r.DecisionID = `a"b\c]d` }), 86, "decision",
			map[string]string{"decision_id": `a"b\c]d`}, ""},
		{"invalid UTF-8 replaced", base(func(r *auditstream.Record) { r.Sigil.Actor = "a\xffb" }), 86, "decision",
			map[string]string{"actor": "a\uFFFDb"}, ""},
		{"MSGID cut to 32 printable", base(func(r *auditstream.Record) { r.Sigil.Type = "a very long type name that goes past thirty-two" }), 86,
			"a_very_long_type_name_that_goes_", nil, ""},
		{"zero time is NILVALUE", base(func(r *auditstream.Record) { r.Timestamp = time.Time{} }), 86, "decision", nil, "-"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := formatSyslog(h, tt.r)
			if err != nil {
				t.Fatal(err)
			}
			m, err := parse5424(string(raw))
			if err != nil {
				t.Fatalf("%q: %v", raw, err)
			}
			if m.pri != tt.pri {
				t.Errorf("PRI %d, want %d", m.pri, tt.pri)
			}
			if m.msgID != tt.msgID || m.host != "node1" || m.app != "sigil" || m.procID != "42" {
				t.Errorf("header %q %q %q %q", m.host, m.app, m.procID, m.msgID)
			}
			if tt.stamp != "" && m.timestamp != tt.stamp {
				t.Errorf("TIMESTAMP %q, want %q", m.timestamp, tt.stamp)
			}
			for k, v := range tt.sd {
				if got := m.sd[SyslogSDID][k]; got != v {
					t.Errorf("SD %s=%q, want %q", k, got, v)
				}
			}
			if !strings.HasPrefix(m.msg, utf8BOM) {
				t.Fatalf("MSG does not start with the UTF-8 BOM: %q", m.msg)
			}
			var back auditstream.Record
			if err := json.Unmarshal([]byte(strings.TrimPrefix(m.msg, utf8BOM)), &back); err != nil || back.DecisionID != tt.r.DecisionID {
				t.Errorf("MSG is not the record's JSON: %v", err)
			}
		})
	}
}

func TestSyslogSpecParams(t *testing.T) {
	checkSpecsRefused(t, []specCase{
		{"syslog+tcp://127.0.0.1:514?facility=local9", "facility"},
		{"syslog+tcp://127.0.0.1:514?ca=/x", `unknown parameter "ca"`},
		{"syslog+tls://127.0.0.1?cert=/x", "cert and key go together"},
		{"syslog+tls://127.0.0.1?ca=/does/not/exist", "parameter ca"},
		{"syslog+tcp://127.0.0.1/path", "no path"},
		{"syslog+tcp://127.0.0.1?app-name=has%20space", "app-name"},
	})
}

// FuzzSyslogFormat: whatever a record holds, its message parses back
// under RFC 5424's grammar with the record's id and chain fields intact.
func FuzzSyslogFormat(f *testing.F) {
	f.Add("d1", "decision", "spiffe://td/ns/a/sa/b", "w", int64(1), "h", "true", int64(0))
	f.Add(`a"b\c]`, "x509svid.refused", "admin", "w]", int64(-3), `\`, "false", int64(5))
	f.Add("\xff\x00", "", "", "", int64(0), "", "", int64(0))
	f.Add("id", "gap", "ä ö", "writer with spaces", int64(1<<62), "ü", "{}", int64(7))
	f.Fuzz(func(t *testing.T, id, typ, actor, writer string, seq int64, hash, result string, lost int64) {
		r := auditstream.Record{DecisionID: id, Timestamp: time.Unix(seq%1e10, lost%1e9), Sigil: auditstream.Meta{Type: typ, Actor: actor, Writer: writer, Seq: seq, Hash: hash, Lost: lost}}
		if json.Valid([]byte(result)) {
			r.Result = json.RawMessage(result)
		}
		raw, err := formatSyslog(syslogHeader{facility: 23, hostname: "h", appName: "sigil", procID: "1"}, r)
		if err != nil {
			return // a record JSON cannot encode never reaches the wire
		}
		m, err := parse5424(string(raw))
		if err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		sd := m.sd[SyslogSDID]
		if want := strings.ToValidUTF8(id, "\uFFFD"); id != "" && sd["decision_id"] != want {
			t.Errorf("decision_id %q, want %q", sd["decision_id"], want)
		}
		if sd["seq"] != strconv.FormatInt(seq, 10) {
			t.Errorf("seq %q, want %d", sd["seq"], seq)
		}
		if m.pri/8 != 23 {
			t.Errorf("facility %d", m.pri/8)
		}
	})
}

// TestSyslogReconnectsAfterReceiverCloses: a receiver that closed the
// connection is noticed before the next batch, which goes on a new
// connection; with the receiver gone, Export returns an error (the spool
// keeps the batch).
func TestSyslogReconnectsAfterReceiverCloses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, _ := io.ReadAll(io.LimitReader(c, 1))
			rest := make([]byte, 64<<10)
			n, _ := c.Read(rest)
			c.Close() // one batch per connection, then hang up
			got <- string(b) + string(rest[:n])
		}
	}()
	s, err := Open("syslog+tcp://" + ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	recs := sealed(t, "w", 2)
	for i := range recs {
		if err := s.Export(ctx, recs[i:i+1]); err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		frame := <-got
		if !strings.Contains(frame, recs[i].DecisionID) {
			t.Fatalf("batch %d: receiver got %q", i, frame)
		}
	}
	ln.Close()
	if err := s.Export(ctx, recs[:1]); err == nil {
		t.Fatal("Export with the receiver gone returned nil")
	}
}
