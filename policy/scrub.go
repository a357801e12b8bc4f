package policy

import (
	"sort"
	"strings"
)

// minQuoted is the shortest header or query value (or part of one) that
// scrubbedError replaces: shorter ones are too common to tell from the
// rest of a message, and credentials are longer.
const minQuoted = 8

// scrubbedError is an evaluation error whose text quotes no request
// header or query value: with OPA's strict builtin errors a builtin
// quotes the value it failed on (to_number: parsing "Bearer ..."), and
// the error goes to the decision log, the audit record and the sidecar's
// log, none of which is masked by --decision-log-mask's paths. Each value
// is named by its input path instead. Unwrap gives the error itself.
type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.err }

// scrub returns err with in's header and query values (whole, and each
// part between spaces, commas, semicolons and "=") replaced in its text
// by their input paths; err itself when it quotes none.
func scrub(err error, in *Input) error {
	msg := err.Error()
	type quoted struct{ value, path string }
	var qs []quoted
	add := func(v, path string) {
		if len(v) >= minQuoted && strings.Contains(msg, v) {
			qs = append(qs, quoted{v, path})
		}
		for _, part := range strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == ',' || r == ';' || r == '=' }) {
			if part != v && len(part) >= minQuoted && strings.Contains(msg, part) {
				qs = append(qs, quoted{part, path})
			}
		}
	}
	for name, v := range in.Request.Headers {
		add(v, "<input.request.headers."+name+">")
	}
	for name, vs := range in.Request.parsedQuery() {
		for _, v := range vs {
			add(v, "<input.request.query."+name+">")
		}
	}
	if len(qs) == 0 {
		return err
	}
	// Longest first, so a whole value goes before its parts.
	sort.Slice(qs, func(i, j int) bool { return len(qs[i].value) > len(qs[j].value) })
	for _, q := range qs {
		msg = strings.ReplaceAll(msg, q.value, q.path)
	}
	return &scrubbedError{msg: msg, err: err}
}
