package replay

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/sigil-mesh/sigil/auditstream"
	"github.com/sigil-mesh/sigil/internal/jsonlimit"
	"github.com/sigil-mesh/sigil/policy"
)

// MaxLineBytes bounds one decision-log line (one record): a longer line
// is skipped, named by file and line, and reading goes on after it.
const MaxLineBytes = 8 << 20

// Recorded is one recorded decision to replay.
type Recorded struct {
	// ID is the record's decision_id.
	ID string
	// Where is the record's place: "FILE:LINE" in JSON lines, "FILE:[i]"
	// (element i, from 0) in a JSON array.
	Where string
	// Input is the input document the decision was made on.
	Input policy.Input
	// Result is the recorded decision; nil when evaluation failed
	// (Error says why), which denied.
	Result *bool
	Error  string
	// Revision is the policy revision it was decided under (bundles'
	// "sigil" revision), or "".
	Revision string
	// Masked lists the input paths erased or masked before the record
	// was written (OPA's "erased" and "masked"): the input replayed lacks
	// them, so a policy that reads them may decide otherwise.
	Masked []string
}

// Skip is one record, line or element not replayed, and why.
type Skip struct {
	// Where is the place (FILE:LINE), with the parser's message after
	// it for what did not parse.
	Where string
	// Reason is the kind of skip ("unparsable", "dry-run decision ..."),
	// the same text for every skip of its kind.
	Reason string
}

// wireRecord is what a line of either writer holds: a sidecar's decision
// log (package policy: OPA's decision-log fields) or a record of the
// audit export (auditstream.Record: the same fields and "sigil"). Fields
// it does not name (OPA's metrics, requested_by, ...) are ignored, so
// OPA's own decision logs read too.
type wireRecord struct {
	DecisionID string                     `json:"decision_id"`
	Path       string                     `json:"path"`
	Input      json.RawMessage            `json:"input"`
	Result     json.RawMessage            `json:"result"`
	Error      json.RawMessage            `json:"error"`
	Bundles    map[string]json.RawMessage `json:"bundles"`
	Erased     []string                   `json:"erased"`
	Masked     []string                   `json:"masked"`
	// Labels carry "mode" in a sidecar's decision log ("dryrun" for the
	// dry-run Policy resource's decisions, docs/policy-resource.md).
	Labels map[string]string `json:"labels"`
	Sigil  *struct {
		Type string `json:"type"`
		Mode string `json:"mode"`
	} `json:"sigil"`
}

// Read reads the decision log r (named name in messages) and calls each
// for every decision in it, in order; what it does not replay comes back
// as skips. r may be JSON lines (a sidecar's decision log, the audit
// export's files) or one JSON array of records (OPA's decision-log upload
// body), either of them gzip'd. Records that are not decisions (the CA's
// events in the audit export, gap records), dry-run decisions (made beside
// an enforced one on the same request, which is replayed) and decisions
// of another rule than policy.Path are skipped, as are lines that do not
// parse.
//
// A file in which nothing is a decision-log record (every line fails to
// parse, or none has decision_id and path) is an error naming the file
// and its first problem; so is a read error. An error from each stops
// the read and is returned.
func Read(r io.Reader, name string, each func(Recorded) error) ([]Skip, error) {
	br, first, closeFn, err := jsonlimit.Open(r)
	defer closeFn()
	rd := &reader{name: name, each: each}
	switch {
	case err == io.EOF:
		return []Skip{{Where: name, Reason: "empty file"}}, nil
	case err != nil:
		return nil, fmt.Errorf("replay: %s: %w", name, err)
	case first == '[':
		err = rd.array(br)
	default:
		err = rd.lines(br)
	}
	if err != nil {
		return rd.skips, err
	}
	if rd.records == 0 && len(rd.skips) > 0 {
		return rd.skips, fmt.Errorf("replay: %s: not a decision log: %s (%s)", name, rd.skips[0].Where, rd.skips[0].Reason)
	}
	return rd.skips, nil
}

type reader struct {
	name    string
	each    func(Recorded) error
	records int // lines or elements that were decision-log records
	skips   []Skip
}

func (rd *reader) skip(where, reason string) {
	rd.skips = append(rd.skips, Skip{Where: where, Reason: reason})
}

// lines reads JSON lines; blank lines are ignored.
func (rd *reader) lines(br *bufio.Reader) error {
	for n := 1; ; n++ {
		line, tooLong, err := readLine(br, MaxLineBytes)
		where := fmt.Sprintf("%s:%d", rd.name, n)
		if tooLong {
			rd.skip(where, fmt.Sprintf("line longer than %d bytes", MaxLineBytes))
		} else if len(bytes.TrimSpace(line)) > 0 {
			if err := rd.record(line, where); err != nil {
				return err
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("replay: %s: %w", where, err)
		}
	}
}

// readLine reads up to and without the next '\n'. A line over max bytes
// is read to its end and dropped (tooLong). err is io.EOF after the last
// line.
func readLine(br *bufio.Reader, max int) (line []byte, tooLong bool, err error) {
	for {
		chunk, err := br.ReadSlice('\n')
		if !tooLong {
			if len(line)+len(chunk) > max+1 {
				tooLong, line = true, nil
			} else {
				line = append(line, chunk...)
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		return bytes.TrimSuffix(line, []byte("\n")), tooLong, err
	}
}

// array reads one JSON array of records, OPA's upload body.
func (rd *reader) array(br *bufio.Reader) error {
	// Decode buffers a whole element: the reader is cut off past
	// MaxLineBytes of one, so a gzip'd batch that inflates to GiB is
	// skipped, not held in memory.
	lr := jsonlimit.NewReader(br)
	dec := json.NewDecoder(lr)
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("replay: %s: not a decision log: %w", rd.name, err)
	}
	for i := 0; dec.More(); i++ {
		var raw json.RawMessage
		where := fmt.Sprintf("%s:[%d]", rd.name, i)
		lr.Allow(dec.InputOffset(), MaxLineBytes)
		if err := dec.Decode(&raw); errors.Is(err, jsonlimit.ErrTooLarge) {
			// Nothing after it is found reliably either.
			rd.skip(where, fmt.Sprintf("record longer than %d bytes", MaxLineBytes))
			return nil
		} else if err != nil {
			// The array's syntax is broken: nothing after is found
			// reliably.
			rd.skip(where+": "+err.Error(), "unparsable")
			return nil
		}
		if err := rd.record(raw, where); err != nil {
			return err
		}
	}
	lr.Allow(dec.InputOffset(), 0)
	if _, err := dec.Token(); err != nil {
		rd.skip(rd.name+": "+err.Error(), "unparsable end of the JSON array")
	}
	return nil
}

// record reads one record and replays or skips it.
func (rd *reader) record(b []byte, where string) error {
	var w wireRecord
	if err := json.Unmarshal(b, &w); err != nil {
		rd.skip(where+": "+err.Error(), "unparsable")
		return nil
	}
	if w.DecisionID == "" || w.Path == "" {
		rd.skip(where, "not a decision-log record (no decision_id or path)")
		return nil
	}
	rd.records++
	if w.Sigil != nil && w.Sigil.Type != auditstream.TypeDecision {
		rd.skip(where, fmt.Sprintf("not a decision (audit record of type %q)", w.Sigil.Type))
		return nil
	}
	if w.Sigil != nil && w.Sigil.Mode == auditstream.ModeDryRun || w.Labels["mode"] == policy.ModeDryRun {
		rd.skip(where, "dry-run decision (the enforced decision of the same request is replayed)")
		return nil
	}
	if strings.TrimPrefix(w.Path, "/") != policy.Path {
		rd.skip(where, fmt.Sprintf("decision of another rule (path %q, not %q)", w.Path, policy.Path))
		return nil
	}
	rec := Recorded{ID: w.DecisionID, Where: where, Masked: append(w.Erased, w.Masked...)}
	if len(w.Input) == 0 || bytes.Equal(w.Input, []byte("null")) {
		rd.skip(where, "no input recorded")
		return nil
	}
	if err := json.Unmarshal(w.Input, &rec.Input); err != nil {
		rd.skip(where+": "+err.Error(), "input is not Sigil's input document")
		return nil
	}
	if len(w.Result) > 0 && !bytes.Equal(w.Result, []byte("null")) {
		var allow bool
		if json.Unmarshal(w.Result, &allow) != nil {
			rd.skip(where, "result is not a boolean")
			return nil
		}
		rec.Result = &allow
	}
	if len(w.Error) > 0 {
		// A string in Sigil's logs, an object in OPA's.
		var s string
		if json.Unmarshal(w.Error, &s) != nil {
			s = string(w.Error)
		}
		rec.Error = s
	}
	if b, ok := w.Bundles["sigil"]; ok {
		var rev struct {
			Revision string `json:"revision"`
		}
		if json.Unmarshal(b, &rev) == nil {
			rec.Revision = rev.Revision
		}
	}
	if err := rd.each(rec); err != nil {
		return err
	}
	return nil
}
