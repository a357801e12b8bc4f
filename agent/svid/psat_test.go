package svid

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
)

// TestProjectedTokenRereadEachAttestation: the token file is read afresh
// at every Next (kubelet refreshes it), a token is not single use, and a
// missing, loose or empty file is an error naming the file, not a silent
// wait.
func TestProjectedTokenRereadEachAttestation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sigil-agent")
	src := NewProjectedToken(path)
	if src.Where() != path {
		t.Fatalf("Where = %q, want %q", src.Where(), path)
	}
	if _, err := src.Next(); err == nil || errors.Is(err, ErrNoToken) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "--k8s-psat-token-file") {
		t.Fatalf("missing file: %v, want an error naming the flag and %s", err, path)
	}
	if err := os.WriteFile(path, []byte("eyJ.one.sig\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for range 2 { // spent or not, the same token is offered again
		c, err := src.Next()
		if err != nil || c != ProjectedSAToken("eyJ.one.sig") {
			t.Fatalf("Next = %v, %v", c, err)
		}
		src.Spent(c)
	}
	if err := os.WriteFile(path, []byte("eyJ.two.sig"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err := src.Next(); err != nil || c != ProjectedSAToken("eyJ.two.sig") {
		t.Fatalf("after kubelet's refresh: Next = %v, %v, want the new token", c, err)
	}
	for _, tt := range []struct {
		name    string
		content string
		mode    os.FileMode
		want    string
	}{
		{"readable by others", "eyJ.x.sig", 0o644, "group or others"},
		{"empty", "\n", 0o600, "empty"},
		{"two words", "a b", 0o600, "more than one word"},
		{"oversized", strings.Repeat("x", maxProjectedToken+1), 0o600, "more than"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "token")
			if err := os.WriteFile(p, []byte(tt.content), tt.mode); err != nil {
				t.Fatal(err)
			}
			os.Chmod(p, tt.mode) // past the umask
			if _, err := NewProjectedToken(p).Next(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Next = %v, want an error saying %q", err, tt.want)
			}
		})
	}
}

// recordingAttester keeps the request it receives and refuses it.
type recordingAttester struct{ got *agentv1.AttestRequest }

func (r *recordingAttester) Attest(_ context.Context, in *agentv1.AttestRequest, _ ...grpc.CallOption) (*agentv1.AttestResponse, error) {
	r.got = in
	return nil, errors.New("refused")
}

// TestCredentialSentInItsField: a projected token travels as
// k8s_psat_token and a join token as join_token, never both; printed, a
// credential shows its kind only.
func TestCredentialSentInItsField(t *testing.T) {
	trust := Trust{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org")}
	for _, tt := range []struct {
		cred      Credential
		join, k8s string
		kind      string
	}{
		{ProjectedSAToken("secret-jwt"), "", "secret-jwt", "projected service-account token"},
		{JoinToken("secret-join"), "secret-join", "", "join token"},
	} {
		var api recordingAttester
		if _, _, err := Attest(context.Background(), &api, tt.cred, trust); err == nil {
			t.Fatal("Attest succeeded on a refusal")
		}
		if api.got.GetJoinToken() != tt.join || api.got.GetK8SPsatToken() != tt.k8s || len(api.got.GetCsr()) == 0 {
			t.Fatalf("request = join %q, k8s_psat %q, want %q, %q", api.got.GetJoinToken(), api.got.GetK8SPsatToken(), tt.join, tt.k8s)
		}
		for _, format := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
			if out := fmt.Sprintf(format, tt.cred); strings.Contains(out, "secret") || !strings.Contains(out, tt.kind) {
				t.Fatalf("Sprintf(%s) = %q: want the kind, never the value", format, out)
			}
		}
	}
}
