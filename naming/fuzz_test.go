package naming

import (
	"net"
	"regexp"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// The rules as Kubernetes' validation writes them (k8s.io/apimachinery
// pkg/util/validation), an oracle independent of the byte loops above.
var (
	dns1123Label     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dns1123Subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	labelValue       = regexp.MustCompile(`^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$`)
	nodeName         = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
)

// FuzzServiceName checks the name rules (service, namespace, object name,
// label) against Kubernetes' regular expressions and that a refusal never
// carries a control character.
func FuzzServiceName(f *testing.F) {
	for _, s := range []string{"api", "a-1", "-a", "A", "a.b", "a_b", strings.Repeat("a", 63), strings.Repeat("a", 64), "é", "a\x1b"} {
		f.Add(s, "v1")
	}
	f.Fuzz(func(t *testing.T, s, v string) {
		label := len(s) <= 63 && dns1123Label.MatchString(s)
		if ValidServiceName(s) != label || ValidNamespace(s) != label {
			t.Fatalf("%q: ValidServiceName %v, ValidNamespace %v, want %v", s, ValidServiceName(s), ValidNamespace(s), label)
		}
		sub := len(s) <= MaxNameLength && dns1123Subdomain.MatchString(s)
		for _, l := range strings.Split(s, ".") {
			sub = sub && len(l) <= 63
		}
		if ValidName(s) != sub {
			t.Fatalf("%q: ValidName %v, want %v", s, ValidName(s), sub)
		}
		err := ValidateLabel(s, v)
		want := len(v) <= 63 && labelValue.MatchString(v) && len(s) <= 63 && s != "" && labelValue.MatchString(s)
		if err == nil && !strings.Contains(s, "/") && !want {
			t.Fatalf("ValidateLabel(%q, %q) accepted", s, v)
		}
		if err != nil && (strings.ContainsAny(err.Error(), "\x00\x1b\x07\n\r") || !strings.HasPrefix(err.Error(), "naming: ")) {
			t.Fatalf("error %q", err)
		}
	})
}

// FuzzParseEndpoint checks that whatever an endpoint flag or message
// carries, the parser never panics, and what it accepts is a dialable
// host:port that parses back to itself.
func FuzzParseEndpoint(f *testing.F) {
	for _, s := range []string{"10.0.0.2:15006", "[::1]:15006", "api.prod:80", "0.0.0.0:1", "10.0.0.300:1", "[fe80::1%eth0]:1", "a:+1", ":80", "api.:65535", "127.1:80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ep, err := ParseEndpoint(s)
		if err != nil {
			if !ep.IsZero() || !strings.HasPrefix(err.Error(), "naming: endpoint ") || strings.ContainsAny(err.Error(), "\x00\x1b\n") {
				t.Fatalf("ParseEndpoint(%q) = %v, %v", s, ep, err)
			}
			return
		}
		host, port, err := net.SplitHostPort(ep.String())
		if err != nil || host == "" || port == "0" || ep.Port() == 0 || strings.ContainsAny(host, " %@/\\") {
			t.Fatalf("ParseEndpoint(%q) accepted %q", s, ep)
		}
		if a := ep.Addr(); a.IsValid() && (a.IsUnspecified() || a.IsMulticast() || a.Zone() != "") {
			t.Fatalf("ParseEndpoint(%q) accepted the address %v", s, a)
		}
		again, err := ParseEndpoint(ep.String())
		if err != nil || again != ep {
			t.Fatalf("%q parses to %q, which parses to %q, %v", s, ep, again, err)
		}
	})
}

// FuzzNodeName checks that a node name the rule accepts makes an agent ID
// that parses back to the same node, and only such names are accepted.
func FuzzNodeName(f *testing.F) {
	for _, s := range []string{"node1", "node-1.example.org", "a_b", ".", "..", "a/b", "", "a b", strings.Repeat("n", 254)} {
		f.Add(s)
	}
	td := spiffeid.RequireTrustDomainFromString("example.org")
	f.Fuzz(func(t *testing.T, s string) {
		err := ValidateNodeName(s)
		want := len(s) <= MaxNodeName && nodeName.MatchString(s) && s != "." && s != ".."
		if (err == nil) != want {
			t.Fatalf("ValidateNodeName(%q) = %v, want ok %v", s, err, want)
		}
		if err != nil {
			return
		}
		id, err := AgentID(td, "join_token", s)
		if err != nil {
			t.Fatalf("AgentID(%q): %v", s, err)
		}
		back, err := ParseAgentID(td, id.String())
		if err != nil || back != id || !strings.HasSuffix(back.Path(), "/"+s) {
			t.Fatalf("%q: agent ID %s parses to %s, %v", s, id, back, err)
		}
	})
}
