package relay

import (
	"strings"
	"testing"

	proxyv1 "github.com/sigil-mesh/sigil/api/proxy/v1"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestCheckRegister(t *testing.T) {
	ok := &proxyv1.Register{Service: "api", Address: "10.0.0.2:15006", Labels: map[string]string{"version": "v1"}}
	if err := checkRegister(ok); err != nil {
		t.Fatal(err)
	}
	for name, tt := range map[string]struct {
		reg  *proxyv1.Register
		want string
	}{
		"missing":     {nil, "first message must be register"},
		"service":     {&proxyv1.Register{Service: "API_1", Address: "10.0.0.2:1"}, "DNS label"},
		"no service":  {&proxyv1.Register{Address: "10.0.0.2:1"}, "DNS label"},
		"hostname":    {&proxyv1.Register{Service: "api", Address: "api:15006"}, "want IP:PORT"},
		"unspecified": {&proxyv1.Register{Service: "api", Address: "0.0.0.0:15006"}, "unspecified"},
		"port":        {&proxyv1.Register{Service: "api", Address: "10.0.0.2:0"}, "bad port"},
		"label":       {&proxyv1.Register{Service: "api", Address: "10.0.0.2:1", Labels: map[string]string{"": "x"}}, "label"},
		"label value": {&proxyv1.Register{Service: "api", Address: "10.0.0.2:1", Labels: map[string]string{"version": "\x1b]0;x\a"}}, `value "\x1b]0;x\a" must be empty or`},
		"label key":   {&proxyv1.Register{Service: "api", Address: "10.0.0.2:1", Labels: map[string]string{"a b": "x"}}, `label key "a b"`},
	} {
		err := checkRegister(tt.reg)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", name, err, tt.want)
		}
	}
}

func FuzzCheckRegister(f *testing.F) {
	f.Add("api", "10.0.0.2:15006", "version", "v1")
	f.Add("", "[::1]:1", "", "")
	f.Fuzz(func(t *testing.T, service, addr, k, v string) {
		reg := &proxyv1.Register{Service: service, Address: addr, Labels: map[string]string{k: v}}
		if checkRegister(reg) != nil {
			return
		}
		// Whatever passes names a service as a DNS label and a routable IP:port.
		if !naming.ValidServiceName(service) || strings.HasPrefix(addr, "0.0.0.0:") {
			t.Fatalf("accepted %q at %q", service, addr)
		}
	})
}

// A registration's address passes naming's endpoint rule, and must be an
// IP: what the hand-written check let through (a sign in the port, a
// multicast IP) is refused.
func TestEndpointAddressRuleRegister(t *testing.T) {
	for addr, want := range map[string]string{
		"10.0.0.2:+80":      "bad port",
		"224.0.0.1:80":      "multicast",
		"[ff02::1]:80":      "multicast",
		"[fe80::1%eth0]:80": "zone",
		"[::]:80":           "unspecified",
		"api.prod:80":       "want IP:PORT",
	} {
		err := checkRegister(&proxyv1.Register{Service: "api", Address: addr})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", addr, err, want)
		}
	}
	if err := checkRegister(&proxyv1.Register{Service: "api", Address: "[2001:db8::2]:15006"}); err != nil {
		t.Fatal(err)
	}
}

// A sidecar's namespace is its identity's: one it names is taken only for
// an ID without one, and a contradiction refuses the registration.
func TestRegistrationNamespace(t *testing.T) {
	for _, tt := range []struct {
		id, ns, want, err string
	}{
		{"spiffe://example.org/ns/prod/sa/api", "", "prod", ""},
		{"spiffe://example.org/ns/prod/sa/api", "prod", "prod", ""},
		{"spiffe://example.org/ns/prod/sa/api", "staging", "", "relay: register: naming: namespace disagrees with the workload's identity"},
		{"spiffe://example.org/api", "", "default", ""},
		{"spiffe://example.org/api", "staging", "staging", ""},
		{"spiffe://example.org/api", "a.b", "", "RFC 1123 label"},
	} {
		p, err := registration(spiffeid.RequireFromString(tt.id), &proxyv1.Register{Service: "api", Address: "10.0.0.2:15006", Namespace: tt.ns})
		switch {
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%s as %q: err %v, want %q", tt.id, tt.ns, err, tt.err)
		case tt.err == "" && (err != nil || p.GetNamespace() != tt.want || p.GetSpiffeId() != tt.id):
			t.Errorf("%s as %q: %v %v, want namespace %q", tt.id, tt.ns, p, err, tt.want)
		}
	}
}
