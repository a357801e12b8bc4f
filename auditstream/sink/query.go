package sink

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sigil-mesh/sigil/privatefile"
)

// specQuery is a sink spec's query parameters, checked against the names
// a sink knows: Open refuses an unknown or repeated parameter by name, so
// a misspelt limit is an error rather than a default silently in force.
type specQuery struct {
	kind string // the sink's name in errors: file, syslog, otlp
	vals map[string]string
}

// parseSpecQuery returns u's query parameters, refusing any not in known
// and any given twice.
func parseSpecQuery(u *url.URL, known ...string) (specQuery, error) {
	scheme := strings.ToLower(u.Scheme)
	if i := strings.IndexByte(scheme, '+'); i > 0 {
		scheme = scheme[:i] // syslog+tls: "syslog"
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return specQuery{}, fmt.Errorf("sink: %s: query: %w", scheme, err)
	}
	names := make([]string, 0, len(q))
	for k := range q {
		names = append(names, k)
	}
	sort.Strings(names)
	out := specQuery{kind: scheme, vals: map[string]string{}}
	for _, k := range names {
		ok := false
		for _, n := range known {
			ok = ok || k == n
		}
		if !ok {
			return specQuery{}, fmt.Errorf("sink: %s: unknown parameter %q for %s (known: %s)", scheme, k, u.Scheme, strings.Join(known, ", "))
		}
		if len(q[k]) != 1 {
			return specQuery{}, fmt.Errorf("sink: %s: parameter %q given %d times", scheme, k, len(q[k]))
		}
		out.vals[k] = q[k][0]
	}
	return out, nil
}

// str returns parameter name, or def when absent.
func (q specQuery) str(name, def string) string {
	if v, ok := q.vals[name]; ok {
		return v
	}
	return def
}

// duration returns parameter name as a Go duration (0 or more), or def.
func (q specQuery) duration(name string, def time.Duration) (time.Duration, error) {
	v, ok := q.vals[name]
	if !ok {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("sink: %s: parameter %s=%q: want a duration such as 24h or 30m", q.kind, name, v)
	}
	return d, nil
}

// count returns parameter name as an integer in [min, max], or def.
func (q specQuery) count(name string, def, min, max int) (int, error) {
	v, ok := q.vals[name]
	if !ok {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < min || n > max {
		return 0, fmt.Errorf("sink: %s: parameter %s=%q: want a whole number from %d to %d", q.kind, name, v, min, max)
	}
	return n, nil
}

// byteUnits are the size suffixes a size parameter takes: IEC binary
// units (KiB = 1024 bytes) and SI decimal ones (KB = 1000 bytes).
var byteUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1},
}

// size returns parameter name as a byte count (a number with an optional
// unit: 100MiB, 5MB, 4096), at least min, or def.
func (q specQuery) size(name string, def, min int64) (int64, error) {
	v, ok := q.vals[name]
	if !ok {
		return def, nil
	}
	num, mult := v, int64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(v, u.suffix) {
			num, mult = strings.TrimSuffix(v, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult || n*mult < min {
		return 0, fmt.Errorf("sink: %s: parameter %s=%q: want a size of at least %d bytes, such as 100MiB", q.kind, name, v, min)
	}
	return n * mult, nil
}

// tlsFromSpec builds a sink's client TLS config from its spec's
// parameters: the server's certificate is verified against the system
// roots or the PEM file ca, for host or server-name, with TLS 1.2 or
// newer; cert and key (a file only its owner may read) present a client
// certificate.
func tlsFromSpec(q specQuery, host string) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: q.str("server-name", host)}
	if ca := q.str("ca", ""); ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("sink: %s: parameter ca: %w", q.kind, err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("sink: %s: parameter ca: %s holds no PEM certificate", q.kind, ca)
		}
	}
	cert, key := q.str("cert", ""), q.str("key", "")
	if (cert == "") != (key == "") {
		return nil, fmt.Errorf("sink: %s: parameters cert and key go together", q.kind)
	}
	if cert != "" {
		certPEM, err := os.ReadFile(cert)
		if err != nil {
			return nil, fmt.Errorf("sink: %s: parameter cert: %w", q.kind, err)
		}
		keyPEM, err := privatefile.Read(key, 1<<20)
		if err != nil {
			return nil, fmt.Errorf("sink: %s: parameter key: %w", q.kind, err)
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("sink: %s: client certificate %s: %w", q.kind, cert, err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}
