package svid

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sigil-mesh/sigil/atomicfile"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Files in the agent's data dir (--data-dir). The key is 0600; it never
// leaves the node.
const (
	svidCertFile = "agent_svid.pem"
	svidKeyFile  = "agent_svid.key"
	bundleFile   = "bundle.json"
)

// Save writes the agent's SVID to dir: its key (0600) first, so that the
// certificate on disk never names a key that is not there.
func Save(dir string, svid *x509svid.SVID) error {
	certs, key, err := svid.Marshal()
	if err != nil {
		return fmt.Errorf("svid: encoding agent svid: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, svidKeyFile), key, 0o600); err != nil {
		return fmt.Errorf("svid: saving agent key: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, svidCertFile), certs, 0o644); err != nil {
		return fmt.Errorf("svid: saving agent svid: %w", err)
	}
	return nil
}

// Load returns the agent SVID saved in dir, or nil if there is none.
func Load(dir string) (*x509svid.SVID, error) {
	svid, err := x509svid.Load(filepath.Join(dir, svidCertFile), filepath.Join(dir, svidKeyFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("svid: saved agent svid: %w", err)
	}
	return svid, nil
}

// SaveBundle writes the bundle last received from the server to dir.
func SaveBundle(dir string, b *spiffebundle.Bundle) error {
	data, err := b.Marshal()
	if err != nil {
		return fmt.Errorf("svid: encoding bundle: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, bundleFile), data, 0o644); err != nil {
		return fmt.Errorf("svid: saving bundle: %w", err)
	}
	return nil
}

// LoadBundle returns the bundle of td last received from the server and
// saved in dir, or nil if there is none.
func LoadBundle(dir string, td spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	b, err := spiffebundle.Load(td, filepath.Join(dir, bundleFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("svid: saved bundle: %w", err)
	}
	return b, nil
}

// ReadTrustBundle reads the PEM roots an operator gives the agent to trust
// the server on first contact (--trust-bundle); blocks other than
// CERTIFICATE are skipped, and at least one certificate is required.
func ReadTrustBundle(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("svid: --trust-bundle: %w", err)
	}
	var ders [][]byte
	for len(data) > 0 {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type == "CERTIFICATE" {
			ders = append(ders, block.Bytes)
		}
	}
	certs, err := parseCertificates(ders, "--trust-bundle "+path+": certificate")
	if err != nil {
		return nil, err
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("svid: --trust-bundle %s: no PEM certificates", path)
	}
	return certs, nil
}
