package sink

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sigil-mesh/sigil/auditstream"
)

// Syslog defaults and RFC 5424 limits.
const (
	// DefaultSyslogTLSPort is RFC 5425's port; DefaultSyslogTCPPort the
	// port rsyslog and syslog-ng listen on for plain TCP.
	DefaultSyslogTLSPort = "6514"
	DefaultSyslogTCPPort = "514"
	// SyslogSDID is the structured-data element carrying a record's
	// chain fields: name@PEN with 32473, the example enterprise number
	// of RFC 5612, until Sigil has a private enterprise number.
	SyslogSDID = "sigil@32473"
	// syslogDialTimeout bounds a connection attempt when Export's
	// context has no deadline; syslogWriteTimeout a batch's write.
	syslogDialTimeout  = 10 * time.Second
	syslogWriteTimeout = 30 * time.Second
)

// RFC 5424 section 6 field limits.
const (
	maxHostname = 255
	maxAppName  = 48
	maxProcID   = 128
	maxMsgID    = 32
	maxSDName   = 32
)

// Facilities by their RFC 5424 table 1 names (as syslog.conf spells them).
var syslogFacilities = map[string]int{
	"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5,
	"lpr": 6, "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
	"ntp": 12, "security": 13, "console": 14, "clock": 15,
	"local0": 16, "local1": 17, "local2": 18, "local3": 19,
	"local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

// RFC 5424 severities Sigil uses (see severityOf).
const (
	sevError   = 3
	sevWarning = 4
	sevNotice  = 5
	sevInfo    = 6
)

func init() {
	register("syslog+tcp", openSyslog)
	register("syslog+tls", openSyslog)
}

// syslogHeader is what every message of one sink shares.
type syslogHeader struct {
	facility int
	hostname string
	appName  string
	procID   string
}

// openSyslog is the syslog sink's Opener:
//
//	syslog+tcp://host:514?facility=authpriv&app-name=sigil&hostname=node1
//	syslog+tls://host:6514?ca=/etc/sigil/syslog-ca.pem&cert=c.pem&key=k.pem&server-name=logs.example.org
//
// Messages are RFC 5424, framed by octet counting (RFC 6587 3.4.1, as RFC
// 5425 frames them). syslog+tls verifies the server's certificate against
// the system roots or the ca file, for host or server-name, with TLS 1.2
// or newer; cert and key (0600) present a client certificate.
func openSyslog(u *url.URL) (Sink, error) {
	tlsOn := strings.EqualFold(u.Scheme, "syslog+tls")
	known := []string{"facility", "app-name", "hostname"}
	if tlsOn {
		known = append(known, "ca", "cert", "key", "server-name")
	}
	q, err := parseSpecQuery(u, known...)
	if err != nil {
		return nil, err
	}
	if u.Host == "" || u.Path != "" && u.Path != "/" || u.User != nil || u.Fragment != "" {
		return nil, fmt.Errorf("sink: syslog: want %s://HOST[:PORT] with no path, user or fragment", u.Scheme)
	}
	addr := u.Host
	if u.Port() == "" {
		port := DefaultSyslogTCPPort
		if tlsOn {
			port = DefaultSyslogTLSPort
		}
		addr = net.JoinHostPort(u.Hostname(), port)
	}
	fac, ok := syslogFacilities[q.str("facility", "authpriv")]
	if !ok {
		return nil, fmt.Errorf("sink: syslog: parameter facility=%q: want one of kern, user, daemon, auth, authpriv, security, local0..local7 (RFC 5424 table 1)", q.str("facility", ""))
	}
	h := syslogHeader{facility: fac, appName: q.str("app-name", "sigil"), procID: strconv.Itoa(os.Getpid())}
	if h.hostname = q.str("hostname", ""); h.hostname == "" {
		if h.hostname, err = os.Hostname(); err != nil || h.hostname == "" {
			h.hostname = "-"
		}
	}
	if !isPrintASCII(h.appName, maxAppName) {
		return nil, fmt.Errorf("sink: syslog: parameter app-name=%q: want 1 to %d printable ASCII characters (RFC 5424 6.2.5)", h.appName, maxAppName)
	}
	if !isPrintASCII(h.hostname, maxHostname) {
		return nil, fmt.Errorf("sink: syslog: hostname %q: want 1 to %d printable ASCII characters (RFC 5424 6.2.4); set hostname=", h.hostname, maxHostname)
	}
	s := &syslogSink{addr: addr, h: h}
	if tlsOn {
		if s.tls, err = tlsFromSpec(q, u.Hostname()); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// syslogSink writes each record as one RFC 5424 message on one TCP (or
// TLS) connection, dialled on first use and again after a failure.
type syslogSink struct {
	addr string
	h    syslogHeader
	tls  *tls.Config // nil for syslog+tcp

	mu     sync.Mutex
	conn   net.Conn
	closed bool
}

// Export writes recs as octet-counted RFC 5424 messages in one write. A
// failed dial or write closes the connection and returns an error; the
// next Export dials again (the spool retries the batch). Syslog over TCP
// has no acknowledgement: a write the kernel accepted before the receiver
// went away is lost, so before writing, a connection the receiver has
// closed is noticed and replaced.
func (s *syslogSink) Export(ctx context.Context, recs []auditstream.Record) error {
	if len(recs) == 0 {
		return nil
	}
	var buf bytes.Buffer
	for i := range recs {
		msg, err := formatSyslog(s.h, recs[i])
		if err != nil {
			return err
		}
		buf.WriteString(strconv.Itoa(len(msg)))
		buf.WriteByte(' ')
		buf.Write(msg)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("sink: syslog: %s: sink closed", s.addr)
	}
	if s.conn != nil && peerClosed(s.conn) {
		s.conn.Close()
		s.conn = nil
	}
	if s.conn == nil {
		c, err := s.dial(ctx)
		if err != nil {
			return err
		}
		s.conn = c
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(syslogWriteTimeout)
	}
	s.conn.SetWriteDeadline(deadline)
	conn := s.conn
	stop := context.AfterFunc(ctx, func() { conn.SetWriteDeadline(time.Now()) }) // cancelled: end the write
	_, err := conn.Write(buf.Bytes())
	stop()
	if err != nil {
		s.conn.Close()
		s.conn = nil
		return fmt.Errorf("sink: syslog: writing to %s: %w", s.addr, err)
	}
	return nil
}

// dial connects to the receiver, with TLS for syslog+tls.
func (s *syslogSink) dial(ctx context.Context) (net.Conn, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, syslogDialTimeout)
		defer cancel()
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return nil, fmt.Errorf("sink: syslog: connecting to %s: %w", s.addr, err)
	}
	if s.tls == nil {
		return c, nil
	}
	tc := tls.Client(c, s.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("sink: syslog: TLS handshake with %s: %w", s.addr, err)
	}
	return tc, nil
}

// peerClosed reports whether the receiver closed c: a syslog receiver
// never sends data, so a read that does not time out at once means EOF
// or an error. On TLS the read goes through the TLS layer (it may take a
// session ticket); a read timeout leaves a tls.Conn usable.
func peerClosed(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(time.Millisecond))
	var b [1]byte
	_, err := c.Read(b[:])
	c.SetReadDeadline(time.Time{})
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// Close closes the connection.
func (s *syslogSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	return err
}

// severityOf is a record's RFC 5424 severity: an allowed decision is
// informational (6); a denial notice (5), a normal but significant
// condition; a decision whose evaluation failed, and a CA refusal
// (*.refused), warning (4); a gap (records lost) error (3), as the audit
// trail itself is damaged. Other CA events are informational.
func severityOf(r auditstream.Record) int {
	switch t := r.Sigil.Type; {
	case t == auditstream.TypeGap:
		return sevError
	case t == auditstream.TypeDecision:
		switch {
		case r.Error != "":
			return sevWarning
		case bytes.Equal(bytes.TrimSpace(r.Result), []byte("true")):
			return sevInfo
		default:
			return sevNotice
		}
	case strings.HasSuffix(t, ".refused"):
		return sevWarning
	default:
		return sevInfo
	}
}

// utf8BOM starts MSG, which RFC 5424 6.4 requires for a UTF-8 MSG.
const utf8BOM = "\xef\xbb\xbf"

// formatSyslog returns r as one RFC 5424 message (section 6):
//
//	<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [sigil@32473 ...] BOM JSON
//
// TIMESTAMP is r's, in UTC with microseconds (6.2.3 allows six digits);
// MSGID is r's type, cut to 32 printable ASCII characters; the
// structured data carries the record's id and chain fields, escaped as
// 6.3.3 says; MSG is the record's JSON.
func formatSyslog(h syslogHeader, r auditstream.Record) ([]byte, error) {
	body, err := json.Marshal(&r)
	if err != nil {
		return nil, fmt.Errorf("sink: syslog: encoding record %s: %w", r.DecisionID, err)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "<%d>1 ", h.facility*8+severityOf(r))
	if r.Timestamp.IsZero() {
		b.WriteString("-")
	} else {
		b.WriteString(r.Timestamp.UTC().Format("2006-01-02T15:04:05.000000Z"))
	}
	for _, f := range []struct {
		v   string
		max int
	}{{h.hostname, maxHostname}, {h.appName, maxAppName}, {h.procID, maxProcID}, {r.Sigil.Type, maxMsgID}} {
		b.WriteByte(' ')
		b.WriteString(headerField(f.v, f.max))
	}
	b.WriteString(" [" + SyslogSDID)
	params := []struct{ name, value string }{
		{"decision_id", r.DecisionID},
		{"type", r.Sigil.Type},
		{"mode", r.Sigil.Mode},
		{"actor", r.Sigil.Actor},
		{"writer", r.Sigil.Writer},
		{"seq", strconv.FormatInt(r.Sigil.Seq, 10)},
		{"prev_hash", r.Sigil.Prev},
		{"hash", r.Sigil.Hash},
	}
	if r.Sigil.Type == auditstream.TypeGap {
		params = append(params, struct{ name, value string }{"lost", strconv.FormatInt(r.Sigil.Lost, 10)})
	}
	for _, p := range params {
		if p.value == "" {
			continue
		}
		b.WriteString(" " + p.name + `="`)
		b.WriteString(escapeSDValue(p.value))
		b.WriteByte('"')
	}
	b.WriteString("] " + utf8BOM)
	b.Write(body)
	return b.Bytes(), nil
}

// headerField returns v fit for a header field of at most max printable
// ASCII characters (RFC 5424 6: PRINTUSASCII, %d33-126): other bytes
// become '_', and an empty value the NILVALUE "-".
func headerField(v string, max int) string {
	if v == "" {
		return "-"
	}
	if len(v) > max {
		v = v[:max]
	}
	out := []byte(v)
	for i, c := range out {
		if c < 33 || c > 126 {
			out[i] = '_'
		}
	}
	return string(out)
}

// escapeSDValue escapes '"', '\' and ']' with a backslash (RFC 5424
// 6.3.3) and replaces invalid UTF-8, as PARAM-VALUE is UTF-8.
func escapeSDValue(v string) string {
	v = strings.ToValidUTF8(v, "\uFFFD")
	var b strings.Builder
	for _, c := range v {
		if c == '"' || c == '\\' || c == ']' {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// isPrintASCII reports whether v is 1 to max characters of PRINTUSASCII.
func isPrintASCII(v string, max int) bool {
	if v == "" || len(v) > max {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 33 || v[i] > 126 {
			return false
		}
	}
	return true
}
