// Package sink holds the exporters of the audit stream: each delivers
// batches of auditstream.Records to one receiver (rotated local files, an
// OPA decision-log HTTP receiver, syslog, OTLP). A spool in front of each
// retries a batch until Export returns nil, so Export must be safe to call
// again with the same batch (receivers see at-least-once delivery and can
// drop duplicates by decision_id).
package sink

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"

	"github.com/sigil-mesh/sigil/auditstream"
)

// Sink delivers batches of records to one receiver.
type Sink interface {
	// Export delivers recs, in order, or returns an error naming the
	// receiver and what failed; nothing is delivered twice within one
	// successful call.
	Export(ctx context.Context, recs []auditstream.Record) error
	// Close releases the sink's connections and files.
	Close() error
}

// Opener makes a sink from its parsed spec (see Open).
type Opener func(u *url.URL) (Sink, error)

// openers maps a scheme to its sink. It is written only by register
// from init functions (which run one at a time, before any other code of
// the package), so it is read without a lock.
var openers = map[string]Opener{}

// register makes scheme known to Open; each sink's file registers its
// schemes in an init function, and only there.
func register(scheme string, o Opener) {
	if _, dup := openers[scheme]; dup {
		panic("sink: scheme registered twice: " + scheme)
	}
	openers[scheme] = o
}

// Schemes returns the schemes Open knows, sorted.
func Schemes() []string {
	out := make([]string, 0, len(openers))
	for s := range openers {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// Redacted returns spec as it may be shown (in logs, errors, metric
// labels): its password replaced by "xxxxx" (url.URL.Redacted), or a
// placeholder when spec is not a URL.
func Redacted(spec string) string {
	u, err := url.Parse(spec)
	if err != nil {
		return "(an audit export spec that is not a URL)"
	}
	return u.Redacted()
}

// Open makes the sink a spec names: a URL whose scheme says the kind of
// receiver (for example https://collector/logs for OPA's decision-log
// upload API, syslog+tls://host:6514, file:///var/log/sigil/audit.jsonl);
// each sink documents its scheme and query parameters. Unknown schemes and
// parameters are refused by name. Errors show the spec without its
// password (url.URL.Redacted).
func Open(spec string) (Sink, error) {
	u, err := url.Parse(spec)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // ue.URL is the spec, password and all
		}
		return nil, fmt.Errorf("sink: audit export spec is not a URL: %w", err)
	}
	o, ok := openers[strings.ToLower(u.Scheme)]
	if !ok {
		return nil, fmt.Errorf("sink: %s: unknown scheme %q (known: %s)", u.Redacted(), u.Scheme, strings.Join(Schemes(), ", "))
	}
	s, err := o(u)
	if err != nil {
		return nil, fmt.Errorf("%w (spec %s)", err, u.Redacted()) // err names the sink
	}
	return s, nil
}
