package svid

import (
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestReadTrustBundleNamesWhatIsWrong(t *testing.T) {
	ca := newTestCA(t, "example.org")
	root := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
	key := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte("skipped")})
	bad := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER")})
	dir := t.TempDir()
	for name, tc := range map[string]struct {
		content []byte // nil: no file
		want    int
		wantErr string
	}{
		"one root":        {content: root, want: 1},
		"other blocks":    {content: append(append([]byte{}, key...), root...), want: 1},
		"two roots":       {content: append(append([]byte{}, root...), root...), want: 2},
		"missing":         {wantErr: "no such file"},
		"no certificates": {content: key, wantErr: "no PEM certificates"},
		"bad certificate": {content: append(append([]byte{}, root...), bad...), wantErr: "certificate 1"},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".pem")
			if tc.content != nil {
				if err := os.WriteFile(path, tc.content, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			certs, err := ReadTrustBundle(path)
			if tc.wantErr == "" {
				if err != nil || len(certs) != tc.want {
					t.Fatalf("ReadTrustBundle: %d certificates, %v; want %d", len(certs), err, tc.want)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), "svid: --trust-bundle") || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ReadTrustBundle error %v, want one that says %q", err, tc.wantErr)
			}
		})
	}
}

// The agent SVID saved is the one loaded after a restart; nothing saved
// is no SVID, not an error; the key file is the owner's only.
func TestSaveLoadAgentSVID(t *testing.T) {
	dir := t.TempDir()
	if s, err := Load(dir); s != nil || err != nil {
		t.Fatalf("Load of an empty dir: %v, %v", s, err)
	}
	td := spiffeid.RequireTrustDomainFromString("example.org")
	ca := newTestCA(t, "example.org")
	key, _, err := NewKeyAndCSR()
	if err != nil {
		t.Fatal(err)
	}
	leaf := ca.leaf(t, "spiffe://example.org/sigil/agent/join_token/node1", &key.PublicKey, time.Now())
	own, err := VerifyChain([][]byte{leaf}, key, x509bundle.FromX509Authorities(td, ca.certs()), time.Now(), AgentOf(td))
	if err != nil {
		t.Fatal(err)
	}
	if err := Save(dir, own); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir)
	if err != nil || got.ID != own.ID || !got.Certificates[0].Equal(own.Certificates[0]) {
		t.Fatalf("Load: %v, %v", got, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, svidKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v; want mode 0600", fi, err)
	}
}
