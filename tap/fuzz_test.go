package tap

import (
	"strings"
	"testing"
	"unicode/utf8"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
)

// Whatever a sidecar or agent puts in an event's fields, what leaves
// Clean has no query, fields within their bounds, and a method, protocol
// and direction that are short visible tokens.
func FuzzClean(f *testing.F) {
	f.Add("/login?token=secret-xyz", "api:8080", "GET", "http", "inbound")
	f.Add("/a", strings.Repeat("h", 300), "GET\r\nAuthorization: Bearer x", "grpc", "outbound")
	f.Add("", "", "\x1b[2J", "h\xff", "sideways")
	f.Fuzz(func(t *testing.T, path, authority, method, protocol, direction string) {
		ev := Clean(&agentv1.TapEvent{Path: path, Authority: authority, Method: method, Protocol: protocol, Direction: direction})
		if strings.Contains(ev.Path, "?") || len(ev.Path) > maxPath || len(ev.Authority) > maxAuthority {
			t.Fatalf("path %q, authority of %d bytes", ev.Path, len(ev.Authority))
		}
		for _, tok := range []string{ev.Method, ev.Protocol} {
			if len(tok) > maxToken || !utf8.ValidString(tok) || strings.ContainsFunc(tok, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
				t.Fatalf("token %q kept", tok)
			}
		}
		if ev.Direction != "" && ev.Direction != Inbound && ev.Direction != Outbound {
			t.Fatalf("direction %q kept", ev.Direction)
		}
	})
}
