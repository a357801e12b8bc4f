package svid

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"sync"

	"github.com/sigil-mesh/sigil/privatefile"
)

// maxTokenFile bounds what is read from a join token file or stdin; a
// token is 43 characters.
const maxTokenFile = 4 << 10

// StdinTokenFile is the --join-token-file value that reads the token from
// standard input, once, at start.
const StdinTokenFile = "-"

// readJoinTokenFile reads a join token from path: a regular file that
// neither group nor others may read (a token is a credential: whoever
// reads it first becomes the node).
func readJoinTokenFile(path string) (string, error) {
	data, err := privatefile.Read(path, maxTokenFile)
	if err != nil {
		return "", fmt.Errorf("svid: --join-token-file: %w", err)
	}
	return readToken(bytes.NewReader(data), path)
}

// readToken reads one token: the content, trimmed of surrounding space.
func readToken(r io.Reader, name string) (string, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxTokenFile+1))
	if err != nil {
		return "", fmt.Errorf("svid: join token from %s: %w", name, err)
	}
	if len(data) > maxTokenFile {
		return "", fmt.Errorf("svid: join token from %s: more than %d bytes", name, maxTokenFile)
	}
	return oneWord(data, "join token", name)
}

// oneWord returns data trimmed of surrounding space: one word, the token
// (what, read from name, for errors).
func oneWord(data []byte, what, name string) (string, error) {
	tok := string(bytes.TrimSpace(data))
	if tok == "" {
		return "", fmt.Errorf("svid: %s from %s: empty", what, name)
	}
	if strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("svid: %s from %s: more than one word", what, name)
	}
	return tok, nil
}

// ErrNoToken means no join token that has not been tried is at hand.
var ErrNoToken = errors.New("svid: no new join token")

// TokenSource is where the agent gets what it attests with, at start and
// again to re-attest when its SVID has expired or been refused: join
// tokens (Tokens) on plain hosts, the projected service-account token
// kubelet refreshes (ProjectedToken) on Kubernetes, so there a node
// re-attests with no person involved.
type TokenSource interface {
	// Next returns a credential not yet spent, ErrNoToken if there is
	// none now, or an error that names what is wrong with the source.
	Next() (Credential, error)
	// Spent marks a credential the server took or refused; a single-use
	// one is never offered again.
	Spent(c Credential)
	// Where says where new credentials come from, for the operator; ""
	// when none can come after start (a restart with a new token is
	// needed).
	Where() string
}

var _ TokenSource = (*Tokens)(nil)

// Tokens hands out join tokens to attest with: the one given at start
// (flag or stdin), then, for re-attestation, whatever --join-token-file
// holds each time it holds a token not tried before. A token is offered
// until the server refuses it (it is single use), so a network failure
// does not waste it.
type Tokens struct {
	file string // re-read on every Next(); "" or "-" when there is no file

	mu      sync.Mutex
	initial string
	refused map[[32]byte]bool
}

// NewTokens reads the start-up token: from --join-token (flag), or from
// --join-token-file (stdin when it is "-").
func NewTokens(flag, file string, stdin io.Reader) (*Tokens, error) {
	t := &Tokens{initial: flag, refused: map[[32]byte]bool{}}
	switch file {
	case "":
	case StdinTokenFile:
		tok, err := readToken(stdin, "stdin")
		if err != nil {
			return nil, err
		}
		t.initial = tok
	default:
		t.file = file
	}
	return t, nil
}

// Where names the token file, the one place new tokens can come from.
func (t *Tokens) Where() string { return t.file }

// Next returns a join token not yet refused, or ErrNoToken; an
// unreadable or unsafe file is an error that names it.
func (t *Tokens) Next() (Credential, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.file != "" {
		tok, err := readJoinTokenFile(t.file)
		if errors.Is(err, fs.ErrNotExist) {
			return Credential{}, ErrNoToken
		}
		if err != nil {
			return Credential{}, err
		}
		if !t.refused[sha256.Sum256([]byte(tok))] {
			return JoinToken(tok), nil
		}
		return Credential{}, ErrNoToken
	}
	if t.initial != "" && !t.refused[sha256.Sum256([]byte(t.initial))] {
		return JoinToken(t.initial), nil
	}
	return Credential{}, ErrNoToken
}

// Spent marks a token the server has taken or refused: it is never
// offered again.
func (t *Tokens) Spent(c Credential) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.refused[sha256.Sum256([]byte(c.value))] = true
}
