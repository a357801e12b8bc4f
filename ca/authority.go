package ca

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/sigil-mesh/sigil/audit"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.step.sm/crypto/x509util"
)

// StateStore keeps the CA's state (certificates, key references, statuses)
// as one document, saved atomically. A store shared by several servers
// (the Kubernetes Secret) returns an error wrapping ErrStateConflict from
// SaveCAState when another server saved first; the CA then reloads.
type StateStore interface {
	LoadCAState(ctx context.Context) ([]byte, error)
	SaveCAState(ctx context.Context, state []byte) error
}

// Auditor records CA events as intents before they take effect; the
// returned Intent records whether they did.
type Auditor interface {
	Begin(events ...audit.Event) (audit.Intent, error)
}

// ErrStateConflict says the state was saved by another server since this
// one loaded it: nothing was saved, and the CA must Reload before it
// rotates again.
var ErrStateConflict = errors.New("ca: the CA state was changed by another server")

// Config configures a CA. TrustDomain, State and Audit are required, and
// KeyDir unless Keys is given.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	// KeyDir holds softkms key files.
	KeyDir string
	// Keys, when set, makes and holds the keys instead of the KMS in
	// KeyDir (KMS and KeyDir are then unused).
	Keys KeyStore
	// KMS is a go.step.sm/crypto KMS URI; DefaultKMS when empty.
	KMS string
	// RootTTL is the lifetime of a self-made root (default 1 year).
	RootTTL time.Duration
	// CATTL is the lifetime of an intermediate and of a JWT key (default 24h).
	CATTL time.Duration
	// Upstream, when set, signs the intermediates instead of a root of ours.
	Upstream *Upstream
	State    StateStore
	Audit    Auditor
	Now      func() time.Time
	Logger   *slog.Logger
}

// Defaults for Config.
const (
	DefaultRootTTL = 365 * 24 * time.Hour
	DefaultCATTL   = 24 * time.Hour
	// backdate allows for clocks a little behind ours.
	backdate = 10 * time.Second
)

// MaxBackdate is the most a certificate's NotBefore is set before the
// moment it is signed (SVIDs: min(MaxBackdate, TTL/10)). A rule that dates
// an SVID's signing from its NotBefore (the server's agent evictions)
// allows for it.
const MaxBackdate = backdate

// Kind says what an authority is.
type Kind string

// Kinds of authority.
const (
	KindRoot         Kind = "root"
	KindIntermediate Kind = "intermediate"
	KindJWT          Kind = "jwt"
)

// Status is where an authority is in its rotation.
type Status string

// Statuses, in the order an authority passes through them.
const (
	StatusPrepared Status = "prepared"
	StatusActive   Status = "active"
	StatusRetired  Status = "retired"
)

// authority is one root, intermediate or JWT key.
type authority struct {
	ID        int64     `json:"id"`
	Kind      Kind      `json:"kind"`
	Status    Status    `json:"status"`
	CertDER   []byte    `json:"cert,omitempty"`
	PublicDER []byte    `json:"public_key,omitempty"`
	KeyID     string    `json:"kid,omitempty"`
	KeyRef    string    `json:"key_ref,omitempty"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	Upstream  bool      `json:"upstream,omitempty"`

	cert   *x509.Certificate
	pub    crypto.PublicKey
	signer crypto.Signer
}

type state struct {
	Sequence    uint64       `json:"bundle_sequence"`
	NextID      int64        `json:"next_id"`
	Authorities []*authority `json:"authorities"`
}

// CA issues SVIDs for one trust domain.
type CA struct {
	cfg  Config
	keys KeyStore
	log  *slog.Logger

	// saveMu orders Rotate and Reload, which both replace st from the
	// store; mu guards st for the signers.
	saveMu sync.Mutex
	mu     sync.RWMutex
	st     state
}

// New opens the CA, loading its state and keys, and runs a first rotation
// so that a fresh data directory gets its root, intermediate and JWT key.
func New(ctx context.Context, cfg Config) (*CA, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("ca: trust domain is required")
	}
	if cfg.State == nil || cfg.Audit == nil || cfg.KeyDir == "" && cfg.Keys == nil {
		return nil, errors.New("ca: state store, audit log and key dir are required")
	}
	if cfg.RootTTL == 0 {
		cfg.RootTTL = DefaultRootTTL
	}
	if cfg.CATTL == 0 {
		cfg.CATTL = DefaultCATTL
	}
	if cfg.CATTL < time.Minute || cfg.RootTTL < 2*cfg.CATTL {
		return nil, fmt.Errorf("ca: ca ttl %s must be at least 1m and root ttl %s at least twice that", cfg.CATTL, cfg.RootTTL)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	keys := cfg.Keys
	if keys == nil {
		km, err := newKeyManager(ctx, cfg.KMS, cfg.KeyDir)
		if err != nil {
			return nil, err
		}
		keys = km
	}
	c := &CA{cfg: cfg, keys: keys, log: cfg.Logger.With("part", "ca")}
	// Servers sharing a store may all start on an empty one: each makes a
	// CA, one saves first, the others reload and take its CA.
	for attempt := 0; ; attempt++ {
		if err := c.Reload(ctx); err != nil {
			return nil, err
		}
		if err := c.checkUpstream(); err != nil {
			return nil, err
		}
		_, err := c.Rotate(ctx)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, ErrStateConflict) || attempt == 2 {
			return nil, err
		}
	}
}

// Reload replaces the CA's state with the store's: the CA was saved by
// another server (a Kubernetes replica that leads). A state that does not
// load leaves the CA as it was.
func (c *CA) Reload(ctx context.Context) error {
	c.saveMu.Lock()
	defer c.saveMu.Unlock()
	raw, err := c.cfg.State.LoadCAState(ctx)
	if err != nil {
		return fmt.Errorf("ca: loading state: %w", err)
	}
	var st state
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &st); err != nil {
			return fmt.Errorf("ca: decoding state: %w", err)
		}
		for _, a := range st.Authorities {
			if err := c.hydrate(a); err != nil {
				return err
			}
		}
	}
	c.mu.Lock()
	c.st = st
	c.mu.Unlock()
	return nil
}

// hydrate parses an authority's certificate or key and loads its signer.
func (c *CA) hydrate(a *authority) error {
	switch {
	case a.CertDER != nil:
		cert, err := x509.ParseCertificate(a.CertDER)
		if err != nil {
			return fmt.Errorf("ca: authority %d: %w", a.ID, err)
		}
		a.cert, a.pub = cert, cert.PublicKey
	case a.PublicDER != nil:
		pub, err := x509.ParsePKIXPublicKey(a.PublicDER)
		if err != nil {
			return fmt.Errorf("ca: authority %d: %w", a.ID, err)
		}
		a.pub = pub
	}
	if a.KeyRef != "" && a.Status != StatusRetired {
		signer, err := c.keys.LoadKey(a.KeyRef)
		if err != nil {
			return err
		}
		a.signer = signer
	}
	return nil
}

// checkUpstream makes the state's roots agree with the configured upstream:
// switching between upstream and self-made roots is refused, since it would
// strand every agent's trust bundle.
func (c *CA) checkUpstream() error {
	for _, a := range c.st.Authorities {
		if a.Kind == KindRoot && a.Status != StatusRetired && a.Upstream != (c.cfg.Upstream != nil) {
			if a.Upstream {
				return errors.New("ca: this data dir was set up with an upstream CA; pass --upstream-cert and --upstream-key again")
			}
			return errors.New("ca: this data dir has its own root; an upstream CA cannot be added to it")
		}
	}
	return nil
}

func (c *CA) find(st *state, kind Kind, status Status) *authority {
	for _, a := range st.Authorities {
		if a.Kind == kind && a.Status == status {
			return a
		}
	}
	return nil
}

func (c *CA) keyName(kind Kind) string {
	return fmt.Sprintf("%s-%d", kind, c.cfg.Now().UnixNano())
}

func (c *CA) makeRoot(st *state) (*authority, error) {
	if up := c.cfg.Upstream; up != nil {
		root := up.root()
		return &authority{Kind: KindRoot, CertDER: root.Raw, cert: root, pub: root.PublicKey, NotBefore: root.NotBefore, NotAfter: root.NotAfter, Upstream: true}, nil
	}
	signer, ref, err := c.keys.CreateKey(c.keyName(KindRoot))
	if err != nil {
		return nil, err
	}
	now := c.cfg.Now()
	subject := pkix.Name{Organization: []string{"Sigil"}, CommonName: "Sigil root " + c.cfg.TrustDomain.Name(), SerialNumber: strconv.FormatInt(now.UnixNano(), 10)}
	cert, err := c.signCA(subject, now, now.Add(c.cfg.RootTTL), signer, nil, nil)
	if err != nil {
		return nil, err
	}
	return &authority{Kind: KindRoot, CertDER: cert.Raw, cert: cert, pub: cert.PublicKey, KeyRef: ref, signer: signer, NotBefore: cert.NotBefore, NotAfter: cert.NotAfter}, nil
}

func (c *CA) makeIntermediate(st *state) (*authority, error) {
	parent, parentSigner := c.parentOf(st)
	if parent == nil {
		return nil, errors.New("ca: no active root to sign an intermediate")
	}
	signer, ref, err := c.keys.CreateKey(c.keyName(KindIntermediate))
	if err != nil {
		return nil, err
	}
	now := c.cfg.Now()
	notAfter := now.Add(c.cfg.CATTL)
	if notAfter.After(parent.NotAfter) {
		notAfter = parent.NotAfter
	}
	subject := pkix.Name{Organization: []string{"Sigil"}, CommonName: "Sigil intermediate " + c.cfg.TrustDomain.Name(), SerialNumber: strconv.FormatInt(now.UnixNano(), 10)}
	cert, err := c.signCA(subject, now.Add(-backdate), notAfter, signer, parent, parentSigner)
	if err != nil {
		return nil, err
	}
	return &authority{Kind: KindIntermediate, CertDER: cert.Raw, cert: cert, pub: cert.PublicKey, KeyRef: ref, signer: signer, NotBefore: cert.NotBefore, NotAfter: cert.NotAfter}, nil
}

// parentOf returns the certificate and key that sign intermediates: the
// upstream's, or our active root's.
func (c *CA) parentOf(st *state) (*x509.Certificate, crypto.Signer) {
	if up := c.cfg.Upstream; up != nil {
		return up.Chain[0], up.Signer
	}
	root := c.find(st, KindRoot, StatusActive)
	if root == nil {
		return nil, nil
	}
	return root.cert, root.signer
}

// signCA signs a CA certificate over signer's key with x509util's root or
// intermediate template: CA certificates are rare, so the library's
// well-reviewed profile wins over speed here.
func (c *CA) signCA(subject pkix.Name, notBefore, notAfter time.Time, key crypto.Signer, parent *x509.Certificate, parentSigner crypto.Signer) (*x509.Certificate, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subject}, key)
	if err != nil {
		return nil, fmt.Errorf("ca: csr for CA certificate: %w", err)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("ca: csr for CA certificate: %w", err)
	}
	tmpl := x509util.DefaultIntermediateTemplate
	if parent == nil {
		tmpl = x509util.DefaultRootTemplate
	}
	data := x509util.CreateTemplateData(subject.CommonName, nil)
	data.SetSubject(x509util.Subject{CommonName: subject.CommonName, Organization: subject.Organization, SerialNumber: subject.SerialNumber})
	cert, err := x509util.NewCertificate(csr, x509util.WithTemplate(tmpl, data))
	if err != nil {
		return nil, fmt.Errorf("ca: template: %w", err)
	}
	cert.SerialNumber = x509util.SerialNumber{Int: serial}
	cert.NotBefore, cert.NotAfter = notBefore, notAfter
	// SPIFFE: a signing certificate names its trust domain.
	cert.URIs = x509util.MultiURL{c.cfg.TrustDomain.ID().URL()}
	x509Tmpl := cert.GetCertificate()
	// Key identifiers (RFC 5280 §4.2.1.1-2): an SKI on every CA
	// certificate, and an AKI naming the issuer's on every one that is not
	// self-signed, so a chain can be built across rotations by key.
	if x509Tmpl.SubjectKeyId, err = keyID(key.Public()); err != nil {
		return nil, err
	}
	if parent == nil {
		parent, parentSigner = x509Tmpl, key
		x509Tmpl.AuthorityKeyId = nil
	} else if x509Tmpl.AuthorityKeyId, err = authorityKeyID(parent); err != nil {
		return nil, err
	}
	out, err := x509util.CreateCertificate(x509Tmpl, parent, key.Public(), parentSigner)
	if err != nil {
		return nil, fmt.Errorf("ca: signing CA certificate: %w", err)
	}
	return out, nil
}

func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("ca: serial: %w", err)
	}
	return serial, nil
}

// KeyDir returns the key directory used for a server data directory.
func KeyDir(dataDir string) string { return filepath.Join(dataDir, "keys") }

// Bundle returns the trust bundle: every root and JWT key that has not
// expired, including the prepared ones.
func (c *CA) Bundle() *spiffebundle.Bundle {
	c.mu.RLock()
	defer c.mu.RUnlock()
	now := c.cfg.Now()
	b := spiffebundle.New(c.cfg.TrustDomain)
	for _, a := range c.st.Authorities {
		if !now.Before(a.NotAfter) {
			continue
		}
		switch a.Kind {
		case KindRoot:
			b.AddX509Authority(a.cert)
		case KindJWT:
			_ = b.AddJWTAuthority(a.KeyID, a.pub)
		}
	}
	b.SetSequenceNumber(c.st.Sequence)
	b.SetRefreshHint(RefreshHint)
	return b
}

// RefreshHint is how often relying parties should fetch the bundle again.
const RefreshHint = 5 * time.Minute

// TrustDomain returns the CA's trust domain.
func (c *CA) TrustDomain() spiffeid.TrustDomain { return c.cfg.TrustDomain }
