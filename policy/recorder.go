package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"sort"
	"strings"
	"sync"
)

// Recorder takes every decision an engine makes (both modes), after its
// decision log: the sidecar's audit export (package auditstream). It must
// not block on the network: a decision waits for it.
type Recorder interface {
	// Record records the decision d made on in; an error means it was
	// not recorded (the recorder counts it).
	Record(in *Input, d Decision) error
}

// ErrNotRecorded wraps a Recorder's error in an enforced decision that a
// fail-closed engine denied because it could not be recorded (see
// WithRecorder): the sidecar answers 503, not 403.
var ErrNotRecorded = errors.New("policy: decision could not be recorded")

// recorder is an engine's Recorder and whether it is fail-closed.
type recorder struct {
	r          Recorder
	failClosed bool
}

// WithRecorder has every decision passed to r after it is made. With
// failClosed, an enforced decision r could not record denies, its Err
// wrapping ErrNotRecorded (OPA's decision-log plugin has no such mode;
// this is Envoy ext_authz's failure_mode_allow: false applied to the
// audit record). Dry-run decisions never block, recorded or not.
func WithRecorder(r Recorder, failClosed bool) Option {
	return func(e *Engine) { e.recorder = &recorder{r: r, failClosed: failClosed} }
}

// record passes d to the engine's recorder, if any, and returns d, denied
// when it had to be recorded and was not.
func (e *Engine) record(in *Input, d Decision) Decision {
	if e.recorder == nil {
		return d
	}
	if in.Request.Headers == nil && in.Request.HeadersFrom != nil {
		// Recorded whole, so a replay (sigil policy diff) can decide on
		// headers a proposed policy reads; masked by the recorder.
		in.Request.Headers = in.Request.HeadersFrom()
	}
	if in.Request.parsedQuery() == nil {
		in.Request.Query = map[string][]string{}
	}
	err := e.recorder.r.Record(in, d)
	if err != nil && e.recorder.failClosed && d.Mode != ModeDryRun {
		d.Allow = false
		d.Err = fmt.Errorf("%w: %w", ErrNotRecorded, err)
	}
	return d
}

// DefaultMask are the input paths erased from every recorded decision
// unless --decision-log-mask is given: the headers that carry credentials
// (RFC 9110 Authorization and Proxy-Authorization, cookies, and the
// common API-key and token headers), so tokens never leave the sidecar.
var DefaultMask = []string{
	"/input/request/headers/authorization",
	"/input/request/headers/proxy-authorization",
	"/input/request/headers/cookie",
	"/input/request/headers/x-api-key",
	"/input/request/headers/x-auth-token",
	"/input/request/headers/x-access-token",
	"/input/request/headers/x-amz-security-token",
}

// Mask erases paths of the input from recorded decisions, as OPA's
// decision-log mask policy does with its "erase" operations: each path is
// a JSON pointer rooted at /input (RFC 6901: "~1" is "/", "~0" is "~"),
// such as /input/request/headers/authorization; the dotted form
// input.request.headers.authorization is taken too. Header names are
// matched lowercase (the input's headers are). A Mask is immutable.
type Mask struct {
	paths   []string   // as given, normalized to pointers, sorted
	headers []string   // header names among them (the common case: no JSON round trip)
	hptrs   []string   // headers' paths, as pointers (erased)
	other   [][]string // the other paths, split after /input
	all     [][]string // every path, split after /input
}

// ParseMask checks paths and returns their Mask; an empty list masks
// nothing. A path not under /input is refused by name.
func ParseMask(paths []string) (*Mask, error) {
	m := &Mask{}
	seen := map[string]bool{}
	for _, p := range paths {
		ptr := p
		if strings.HasPrefix(p, "input.") {
			ptr = "/" + strings.ReplaceAll(strings.ReplaceAll(p, "~", "~0"), ".", "/")
		}
		if !strings.HasPrefix(ptr, "/input/") || strings.HasSuffix(ptr, "/") || strings.Contains(ptr, "//") {
			return nil, fmt.Errorf("policy: mask path %q: want a JSON pointer under /input, such as /input/request/headers/authorization", p)
		}
		segs := strings.Split(strings.TrimPrefix(ptr, "/input/"), "/")
		for i, s := range segs {
			if strings.Contains(strings.ReplaceAll(strings.ReplaceAll(s, "~0", ""), "~1", ""), "~") {
				return nil, fmt.Errorf("policy: mask path %q: bad escape in %q (RFC 6901: ~0 or ~1)", p, s)
			}
			segs[i] = strings.ReplaceAll(strings.ReplaceAll(s, "~1", "/"), "~0", "~")
		}
		if len(segs) == 3 && segs[0] == "request" && segs[1] == "headers" {
			segs[2] = strings.ToLower(segs[2])
			ptr = "/input/request/headers/" + strings.ReplaceAll(strings.ReplaceAll(segs[2], "~", "~0"), "/", "~1")
		}
		if seen[ptr] {
			continue
		}
		seen[ptr] = true
		m.paths = append(m.paths, ptr)
		m.all = append(m.all, segs)
		if len(segs) == 3 && segs[0] == "request" && segs[1] == "headers" {
			m.headers = append(m.headers, segs[2])
			m.hptrs = append(m.hptrs, ptr)
		} else {
			m.other = append(m.other, segs)
		}
	}
	sort.Strings(m.paths)
	return m, nil
}

// Paths returns the mask's paths as JSON pointers, sorted.
func (m *Mask) Paths() []string { return append([]string(nil), m.paths...) }

// Apply returns in's JSON with the mask's paths erased, and the paths it
// erased (OPA's "erased": only those present). in is not changed.
func (m *Mask) Apply(in *Input) (json.RawMessage, []string, error) {
	// 1 KiB: a request's input fits without growing.
	return m.AppendApply(make([]byte, 0, 1024), in)
}

// AppendApply is Apply writing the JSON over dst (from dst[:0], grown
// when it does not fit) instead of a fresh buffer, so that a caller can
// reuse one buffer across decisions (the sidecar's audit recorder, once
// per decision). The JSON returned may share dst's array, or, with mask
// paths outside the request headers, be newly allocated; the errors are
// Apply's.
func (m *Mask) AppendApply(dst []byte, in *Input) (json.RawMessage, []string, error) {
	var erased []string
	for i, name := range m.headers {
		if _, ok := in.Request.Headers[name]; ok {
			erased = append(erased, m.hptrs[i])
		}
	}
	// The masked headers are left out as the input is written, not
	// deleted from a copy of its headers.
	b, ok := appendInput(dst[:0], in, m.headers)
	if !ok {
		cp := *in
		if len(erased) > 0 {
			cp.Request.Headers = maps.Clone(in.Request.Headers)
			for _, name := range m.headers {
				delete(cp.Request.Headers, name)
			}
		}
		var err error
		if b, err = json.Marshal(&cp); err != nil {
			return nil, nil, fmt.Errorf("policy: encoding input: %w", err)
		}
	}
	if len(m.other) == 0 {
		sort.Strings(erased)
		return b, erased, nil
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, nil, fmt.Errorf("policy: masking input: %w", err)
	}
	erased = append(erased, erase(doc, m.other)...)
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, nil, fmt.Errorf("policy: masking input: %w", err)
	}
	sort.Strings(erased)
	return b, erased, nil
}

// erase erases paths from the input document doc and returns those it
// found.
func erase(doc map[string]any, paths [][]string) []string {
	var erased []string
	for _, segs := range paths {
		obj := doc
		for i, s := range segs {
			v, ok := obj[s]
			if !ok {
				break
			}
			if i == len(segs)-1 {
				delete(obj, s)
				erased = append(erased, pointer(segs))
				break
			}
			if obj, ok = v.(map[string]any); !ok {
				break
			}
		}
	}
	return erased
}

// pointer is the JSON pointer of an input path.
func pointer(segs []string) string {
	var b strings.Builder
	b.WriteString("/input")
	for _, s := range segs {
		b.WriteByte('/')
		b.WriteString(strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1"))
	}
	return b.String()
}

// Writer returns a writer that masks the decision-log lines written to it
// (JSON objects with an "input", one per line) before passing them on to
// w, adding OPA's "erased"; WithDecisionLog takes it so the local log
// holds no more than what is exported. Flush and Close reach w.
func (m *Mask) Writer(w io.Writer) io.Writer { return &maskWriter{m: m, w: w} }

type maskWriter struct {
	m    *Mask
	w    io.Writer
	mu   sync.Mutex
	part []byte // the start of a line not yet ended
}

func (mw *maskWriter) Write(p []byte) (int, error) {
	mw.mu.Lock()
	defer mw.mu.Unlock()
	data := append(mw.part, p...)
	var out bytes.Buffer
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		out.Write(mw.m.line(data[:i]))
		out.WriteByte('\n')
		data = data[i+1:]
	}
	mw.part = append(mw.part[:0:0], data...)
	if out.Len() > 0 {
		if _, err := mw.w.Write(out.Bytes()); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// line masks one decision-log line; a line that is not a JSON object is
// passed on as it is.
func (m *Mask) line(b []byte) []byte {
	var rec map[string]json.RawMessage
	if json.Unmarshal(b, &rec) != nil || rec["input"] == nil {
		return b
	}
	var doc map[string]any
	if json.Unmarshal(rec["input"], &doc) != nil {
		return b
	}
	erased := erase(doc, m.all)
	if len(erased) == 0 {
		return b
	}
	sort.Strings(erased)
	masked, err := json.Marshal(doc)
	if err != nil {
		return b
	}
	rec["input"] = masked
	rec["erased"], _ = json.Marshal(erased)
	out, err := json.Marshal(rec)
	if err != nil {
		return b
	}
	return out
}

// Flush passes Flush on to the writer under it, if it has one.
func (mw *maskWriter) Flush() error {
	if f, ok := mw.w.(flusher); ok {
		return f.Flush()
	}
	return nil
}

// Close closes the writer under it, if it is an io.Closer.
func (mw *maskWriter) Close() error {
	if c, ok := mw.w.(io.Closer); ok {
		return c.Close()
	}
	return nil
}
