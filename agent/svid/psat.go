package svid

import (
	"fmt"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/privatefile"
)

// Credential is what a node attests with: a join token (single use) or a
// projected service-account token (SPIRE's k8s_psat; valid until it
// expires, refreshed by kubelet). Its value is a secret: printed, a
// Credential shows its kind only.
type Credential struct {
	projected bool
	value     string
}

// JoinToken is a join token credential.
func JoinToken(token string) Credential { return Credential{value: token} }

// ProjectedSAToken is a projected service-account token credential
// (audience sigil-server).
func ProjectedSAToken(token string) Credential { return Credential{projected: true, value: token} }

// String names the credential's kind, never its value.
func (c Credential) String() string {
	if c.projected {
		return "projected service-account token"
	}
	return "join token"
}

// GoString is String, so %#v shows no secret either.
func (c Credential) GoString() string { return c.String() }

// request is the Attest request that presents c with csr.
func (c Credential) request(csr []byte) *agentv1.AttestRequest {
	if c.projected {
		return &agentv1.AttestRequest{K8SPsatToken: c.value, Csr: csr}
	}
	return &agentv1.AttestRequest{JoinToken: c.value, Csr: csr}
}

// maxProjectedToken bounds what is read from the projected token file: a
// service-account JWT is one to two kilobytes.
const maxProjectedToken = 16 << 10

var _ TokenSource = (*ProjectedToken)(nil)

// ProjectedToken is the TokenSource of an agent on Kubernetes: the
// projected service-account token kubelet writes to a file of the agent's
// pod and refreshes before it expires. The file is read afresh at every
// attestation, first and re-attestation alike. It must be private to the
// agent (a projected volume with defaultMode 0400 or 0600; group or
// others able to read it is refused): whoever holds the token can attest
// as this node until the token expires.
type ProjectedToken struct{ file string }

// NewProjectedToken reads tokens from file (--k8s-psat-token-file).
func NewProjectedToken(file string) *ProjectedToken { return &ProjectedToken{file: file} }

// Where names the token file.
func (p *ProjectedToken) Where() string { return p.file }

// Next reads the token file. A missing, unsafe or malformed file is an
// error that names it (never ErrNoToken: kubelet always keeps a token
// there, so its absence is a deployment fault to show).
func (p *ProjectedToken) Next() (Credential, error) {
	data, err := privatefile.Read(p.file, maxProjectedToken)
	if err != nil {
		return Credential{}, fmt.Errorf("svid: --k8s-psat-token-file (the projected serviceAccountToken volume, audience sigil-server): %w", err)
	}
	tok, err := oneWord(data, "projected service-account token", p.file)
	if err != nil {
		return Credential{}, err
	}
	return ProjectedSAToken(tok), nil
}

// Spent does nothing: a projected token is not single use, and one the
// server refused is sent again on the agent's backoff, since the refusal
// may come from the server's configuration (its allowed service accounts,
// its RBAC), which can be fixed without touching the node.
func (p *ProjectedToken) Spent(Credential) {}
