package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/privatefile"
	"github.com/sigil-mesh/sigil/proxy/hop"
	"github.com/sigil-mesh/sigil/proxy/upstream"
	"github.com/sigil-mesh/sigil/traffic"
)

// Limits of requests to hosts outside the mesh.
const (
	maxCertFileBytes  = 1 << 20  // caCertificates, clientCertificate
	maxKeyFileBytes   = 64 << 10 // privateKey
	externalDialLimit = 5 * time.Second
)

// externalTarget is how the sidecar reaches one host outside the mesh,
// from the DestinationRule for it: plain (tls nil: mode DISABLE) or TLS
// originated with tls (SIMPLE, MUTUAL). Built once per mesh state.
type externalTarget struct {
	host      string      // the rule's host, lower case: also the metric label
	tls       *tls.Config // nil: plain text
	transport *http.Transport
	// pool counts the requests routed here in flight, for the retry
	// budget (Envoy's defaults, as for a mesh cluster without a
	// connectionPool: sendExternal).
	pool *upstream.Pool
}

// externalFor returns how to reach port of host (host without its port;
// port the one the app addressed), or nil when no DestinationRule says
// how to reach that port (then the request is refused as before: only the
// mesh's services and the hosts and ports its rules name are reachable).
// Targets are cached per host and port, since a rule's portLevelSettings
// may give each port its own tls.
func (o *outbound) externalFor(st *meshState, host string, port uint16) (*externalTarget, error) {
	policy, ok := st.table.ExternalRule(host, uint32(port))
	if !ok {
		return nil, nil
	}
	name := strings.ToLower(strings.TrimSuffix(host, "."))
	key := "external " + net.JoinHostPort(name, strconv.Itoa(int(port)))
	if t, ok := st.clusters.Load(key); ok {
		return t.(*externalTarget), nil
	}
	cfg, err := originationTLS(policy.TLS, host)
	if err != nil {
		// Not cached: fixing the file makes the next request work.
		return nil, err
	}
	t := &externalTarget{host: name, tls: cfg, pool: upstream.NewPool(nil)}
	dialer := &net.Dialer{Timeout: externalDialLimit, KeepAlive: 30 * time.Second}
	t.transport = &http.Transport{
		DialContext:         dialer.DialContext,
		TLSClientConfig:     cfg,
		TLSHandshakeTimeout: hsLimit,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		// As much of the answer's header as the sidecar accepts anywhere.
		MaxResponseHeaderBytes: 64 << 10,
		Protocols:              new(http.Protocols),
	}
	t.transport.Protocols.SetHTTP1(true)
	if o.dialOutside != nil {
		t.transport.DialContext = o.dialOutside
	}
	if cfg != nil {
		// Over TLS the server may pick HTTP/2 (ALPN), which gRPC needs;
		// plain text stays HTTP/1.1 (no h2c toward hosts outside the mesh).
		t.transport.Protocols.SetHTTP2(true)
	}
	got, _ := st.clusters.LoadOrStore(key, t)
	return got.(*externalTarget), nil
}

// originationTLS builds the client TLS of a SIMPLE or MUTUAL rule (nil for
// DISABLE): the server is checked against caCertificates (else the
// system's roots) and, when subjectAltNames are given, must carry one of
// them (Istio's rule), else the SNI name or host. The private key must be
// a file only its owner may read (package privatefile).
func originationTLS(s *traffic.ClientTLSSettings, host string) (*tls.Config, error) {
	if s == nil || s.Mode == traffic.TLSDisable || s.Mode == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: s.SNI}
	if cfg.ServerName == "" && net.ParseIP(host) == nil {
		cfg.ServerName = strings.TrimSuffix(host, ".")
	}
	if s.CACertificates != "" {
		pem, err := readLimited(s.CACertificates, maxCertFileBytes)
		if err != nil {
			return nil, fmt.Errorf("proxy: tls.caCertificates: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("proxy: tls.caCertificates: %s holds no PEM certificate", s.CACertificates)
		}
	}
	if s.Mode == traffic.TLSMutual {
		certPEM, err := readLimited(s.ClientCertificate, maxCertFileBytes)
		if err != nil {
			return nil, fmt.Errorf("proxy: tls.clientCertificate: %w", err)
		}
		keyPEM, err := privatefile.Read(s.PrivateKey, maxKeyFileBytes)
		if err != nil {
			return nil, fmt.Errorf("proxy: tls.privateKey: %w", err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			// X509KeyPair's errors never quote the key.
			return nil, fmt.Errorf("proxy: tls.clientCertificate and tls.privateKey: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	switch {
	case s.InsecureSkipVerify != nil && *s.InsecureSkipVerify:
		cfg.InsecureSkipVerify = true
	case len(s.SubjectAltNames) > 0:
		// Chain checked by hand, name checked against the list.
		roots, sans := cfg.RootCAs, s.SubjectAltNames
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error { return verifySANs(cs, roots, sans) }
	}
	return cfg, nil
}

// verifySANs checks the server's chain against roots (nil: the system's)
// and that its certificate names one of sans (DNS, URI or IP).
func verifySANs(cs tls.ConnectionState, roots *x509.CertPool, sans []string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("proxy: tls origination: the server sent no certificate")
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter}); err != nil {
		return fmt.Errorf("proxy: tls origination: %w", err)
	}
	names := slices.Clone(leaf.DNSNames)
	for _, u := range leaf.URIs {
		names = append(names, u.String())
	}
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	for _, want := range sans {
		if slices.Contains(names, want) {
			return nil
		}
	}
	return fmt.Errorf("proxy: tls origination: the server's certificate names %v, none of subjectAltNames %v", names, sans)
}

// readLimited reads a certificate file of at most max bytes.
func readLimited(path string, max int64) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Size() > max {
		return nil, fmt.Errorf("proxy: %s: more than %d bytes", path, max)
	}
	return os.ReadFile(path)
}

// hostPort splits an authority of a host outside the mesh; a missing port
// is the one of what goes on the wire: 443 when the sidecar originates
// TLS, else 80.
func (t *externalTarget) hostPort(authority string) (string, string, error) {
	port, err := naming.Port(authority)
	if err != nil {
		return "", "", err
	}
	host := authority
	switch {
	case port != 0:
		host = authority[:strings.LastIndexByte(authority, ':')]
	case t.tls != nil:
		port = 443
	default:
		port = 80
	}
	return strings.Trim(host, "[]"), strconv.Itoa(int(port)), nil
}

// externalOf forwards a request whose host serviceOf found outside the
// mesh (err) when a DestinationRule names the host; label is then the
// rule's host, for metrics.
func (o *outbound) externalOf(w *statusRecorder, r *http.Request, err error) (label string, ok bool) {
	if !errors.Is(err, naming.ErrNotInMesh) {
		return "", false
	}
	authority := r.Host
	if r.URL.IsAbs() {
		authority = rawAuthority(r.RequestURI, r.URL.Host)
	}
	return o.toExternal(w, r, authority)
}

// toExternal forwards a request for a host outside the mesh when a
// DestinationRule says how to reach it, and reports whether it did (false:
// the caller refuses the request as for any unknown host). The request
// goes as the app sent it, without the mesh's identity headers; the
// sidecar's own mTLS identity never leaves the mesh.
func (o *outbound) toExternal(w *statusRecorder, r *http.Request, authority string) (string, bool) {
	host := authority
	if h, _, err := net.SplitHostPort(authority); err == nil {
		host = h
	}
	host = strings.ToLower(strings.Trim(host, "[]"))
	addressed, err := naming.Port(authority)
	if err != nil {
		refuseName(w, r, err)
		return host, true
	}
	if addressed == 0 {
		addressed = 80 // what the app addressed: http without a port
	}
	t, err := o.externalFor(o.state.Load(), host, addressed)
	if err != nil {
		o.p.log.Warn("tls origination refused", "host", host, "error", err)
		hop.WriteError(w, r, http.StatusBadGateway, "sigil: cannot reach "+host+": "+err.Error())
		return host, true
	}
	if t == nil {
		return "", false
	}
	h, port, err := t.hostPort(authority)
	if err != nil {
		refuseName(w, r, err)
		return t.host, true
	}
	if err := hop.TakeConnectionOptions(r.Header); err != nil {
		hop.WriteError(w, r, http.StatusBadRequest, "sigil: "+err.Error())
		return t.host, true
	}
	hop.DropForgedIdentity(r.Header)
	delete(r.Header, hop.XFCC)
	if hop.IsWebSocketUpgrade(r.Header) {
		o.upgradeVia(w, r, t.transport, externalScheme(t), net.JoinHostPort(h, port))
		return t.host, true
	}
	hop.StripRequestHeaders(r.Header)
	hop.NoDefaultUserAgent(r.Header)
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host, out.URL.User = "http", net.JoinHostPort(h, port), nil
	if t.tls != nil {
		out.URL.Scheme = "https"
	}
	resp, err := t.transport.RoundTrip(out)
	if err != nil {
		code := http.StatusBadGateway
		if errors.Is(err, context.DeadlineExceeded) {
			code = http.StatusGatewayTimeout
		}
		hop.WriteError(w, r, code, "sigil: "+t.host+" failed: "+reasonOf(err))
		return t.host, true
	}
	defer resp.Body.Close()
	hop.RemoveHeaders(resp.Header)
	hop.CopyResponse(w, resp)
	return t.host, true
}

// connectExternal tunnels a CONNECT to a host outside the mesh that a
// DestinationRule names: plain TCP (DISABLE) or TLS the sidecar
// originates (SIMPLE, MUTUAL) around what the app sends. It reports
// whether a rule applied.
func (o *outbound) connectExternal(w http.ResponseWriter, r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.Host)
	if err != nil {
		return false
	}
	addressed, err := naming.Port(r.Host)
	if err != nil || addressed == 0 {
		return false
	}
	t, err := o.externalFor(o.state.Load(), strings.Trim(host, "[]"), addressed)
	if err != nil {
		hop.WriteError(w, r, http.StatusBadGateway, "sigil: cannot reach "+host+": "+err.Error())
		return true
	}
	if t == nil {
		return false
	}
	h, port, err := t.hostPort(r.Host)
	if err != nil {
		refuseName(w, r, err)
		return true
	}
	up, err := t.dial(r.Context(), net.JoinHostPort(h, port))
	if err != nil {
		hop.WriteError(w, r, http.StatusBadGateway, "sigil: "+t.host+" failed: "+reasonOf(err))
		return true
	}
	o.hijackAndPipe(w, up, o.tcpRecord(naming.Service{}, t.host, nil, nil))
	return true
}

// dial opens a connection to addr of the target's host: plain, or with
// the TLS the sidecar originates.
func (t *externalTarget) dial(ctx context.Context, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, externalDialLimit+hsLimit)
	defer cancel()
	// The transport's dialer: TCP and HTTP reach the host alike.
	c, err := t.transport.DialContext(ctx, "tcp", addr)
	if err != nil || t.tls == nil {
		return c, err
	}
	cfg := t.tls
	if cfg.ServerName == "" {
		// An IP address: checked against the certificate's IP SANs,
		// as tls.Dialer does.
		cfg = cfg.Clone()
		cfg.ServerName, _, _ = net.SplitHostPort(addr)
	}
	return hop.HandshakeTLS(ctx, c, cfg)
}

// transparentExternal carries a captured connection to an address no
// mesh endpoint has when a DestinationRule names its IP (transparent mode
// knows only the original destination's address, not a name), and
// reports whether one did.
func (o *outbound) transparentExternal(c net.Conn, dst *net.TCPAddr) bool {
	ip := dst.IP.String()
	t, err := o.externalFor(o.state.Load(), ip, uint16(dst.Port))
	if err != nil {
		o.p.log.Warn("tls origination refused", "host", ip, "error", err)
		return false
	}
	if t == nil {
		return false
	}
	up, err := t.dial(context.Background(), dst.String())
	if err != nil {
		o.p.log.Warn("external tcp failed", "host", t.host, "error", err)
		c.Close()
		return true
	}
	o.pipeTCP(c, up, o.tcpRecord(naming.Service{}, t.host, nil, nil))
	return true
}
