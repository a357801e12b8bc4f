package naming

import (
	"strings"
	"testing"
)

// One rule for an endpoint address, where --upstream, --advertise, the
// agent's registration check and discovery each had their own: an IP
// literal or a DNS name, a port of 1 to 65535 in digits.
func TestEndpointAddressRule(t *testing.T) {
	for _, tt := range []struct {
		in, want string // want: String(); "" refused, with err in the error
		err      string
	}{
		{in: "10.0.0.2:15006", want: "10.0.0.2:15006"},
		{in: "127.0.0.1:1", want: "127.0.0.1:1"},
		{in: "[::1]:15006", want: "[::1]:15006"},
		{in: "[2001:DB8:0::1]:443", want: "[2001:db8::1]:443"},
		{in: "[::ffff:10.0.0.1]:80", want: "[::ffff:10.0.0.1]:80"},
		{in: "api:15006", want: "api:15006"},
		{in: "api.prod.svc.cluster.local:15006", want: "api.prod.svc.cluster.local:15006"},
		{in: "api.prod.:15006", want: "api.prod.:15006"},
		{in: "Api-1.example.org:8080", want: "Api-1.example.org:8080"},
		{in: "10.0.0.2:65535", want: "10.0.0.2:65535"},
		{in: "10.0.0.2:080", want: "10.0.0.2:80"},

		{in: "", err: "want HOST:PORT"},
		{in: "10.0.0.2", err: "want HOST:PORT"},
		{in: ":15006", err: "want HOST:PORT"},
		{in: "::1:80", err: "want HOST:PORT"},
		{in: "[::1]", err: "want HOST:PORT"},
		{in: "[::1]x:80", err: "want HOST:PORT"},
		{in: "[::1:80", err: "want HOST:PORT"},
		{in: "10.0.0.2:", err: "bad port"},
		{in: "10.0.0.2:0", err: "bad port"},
		{in: "10.0.0.2:65536", err: "bad port"},
		{in: "10.0.0.2:+80", err: "bad port"},
		{in: "10.0.0.2:-1", err: "bad port"},
		{in: "10.0.0.2: 80", err: "bad port"},
		{in: "10.0.0.2:http", err: "bad port"},
		{in: "10.0.0.2:000080", err: "bad port"},
		{in: "0.0.0.0:15006", err: "unspecified"},
		{in: "[::]:15006", err: "unspecified"},
		{in: "224.0.0.1:80", err: "multicast"},
		{in: "[ff02::1]:80", err: "multicast"},
		{in: "[fe80::1%eth0]:80", err: "zone"},
		{in: "[10.0.0.1]:80", err: "bad IPv6"},
		{in: "[zz]:80", err: "bad IPv6"},
		{in: "10.0.0.300:80", err: "last label is all digits"},
		{in: "127.1:80", err: "last label is all digits"},
		{in: "010.0.0.1:80", err: "last label is all digits"},
		{in: "0x7f.0.0.1:80", err: "last label is all digits"},
		{in: "under_score:80", err: "neither an IP address nor a DNS name"},
		{in: "a..b:80", err: "neither"},
		{in: "-api:80", err: "neither"},
		{in: "api x:80", err: "neither"},
		{in: "user@api:80", err: "neither"},
		{in: "äpi:80", err: "neither"},
		{in: "api\n:80", err: `"api\n:80"`},
		{in: strings.Repeat("a", 64) + ":80", err: "neither"},
		{in: strings.Repeat("a.", 200) + "a:80", err: "longer than 259"},
	} {
		ep, err := ParseEndpoint(tt.in)
		if tt.want != "" {
			if err != nil || ep.String() != tt.want || ep.IsZero() {
				t.Errorf("ParseEndpoint(%q) = %q, %v; want %q", tt.in, ep, err, tt.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.HasPrefix(err.Error(), "naming: endpoint ") || !ep.IsZero() {
			t.Errorf("ParseEndpoint(%q) = %q, %v; want an error with %q", tt.in, ep, err, tt.err)
		}
	}
	ep, _ := ParseEndpoint("10.0.0.2:15006")
	if !ep.Addr().IsValid() || ep.Addr().String() != "10.0.0.2" || ep.Port() != 15006 {
		t.Errorf("IP endpoint: %v %d", ep.Addr(), ep.Port())
	}
	if b, _ := ep.MarshalText(); string(b) != "10.0.0.2:15006" {
		t.Errorf("MarshalText %q", b)
	}
	if ep, _ := ParseEndpoint("api:1"); ep.Addr().IsValid() || ep.Port() != 1 {
		t.Errorf("DNS endpoint: %v %d", ep.Addr(), ep.Port())
	}
	if (Endpoint{}).String() != "" {
		t.Error("zero Endpoint has an address")
	}
}
