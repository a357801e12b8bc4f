package capture

import (
	"slices"
	"strings"
	"testing"
)

func TestCaptureRules(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     IptablesConfig
		wantErr string
		want    []string // each rule joined by spaces, in order
	}{
		{name: "no proxy uid", cfg: IptablesConfig{ProxyUID: -1, OutboundPort: 15001}, wantErr: "capture: --proxy-uid -1"},
		{name: "no port", cfg: IptablesConfig{ProxyUID: 1337}, wantErr: "capture: --outbound-port 0"},
		{name: "port too large", cfg: IptablesConfig{ProxyUID: 1337, OutboundPort: 65536}, wantErr: "capture: --outbound-port 65536"},
		{name: "excluded port", cfg: IptablesConfig{ProxyUID: 1337, OutboundPort: 15001, ExcludePorts: []int{8081}}, want: []string{
			"-t nat -N SIGIL_OUTPUT",
			"-t nat -A SIGIL_OUTPUT -m owner --uid-owner 1337 -j RETURN",
			"-t nat -A SIGIL_OUTPUT -d 127.0.0.0/8 -j RETURN",
			"-t nat -A SIGIL_OUTPUT -p tcp --dport 8081 -j RETURN",
			"-t nat -A SIGIL_OUTPUT -p tcp -j REDIRECT --to-ports 15001",
			"-t nat -A OUTPUT -p tcp -j SIGIL_OUTPUT",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rules, err := tc.cfg.Rules()
			if tc.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one starting %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range rules {
				got = append(got, strings.Join(r, " "))
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
	// RemoveRules undoes them in reverse: the jump first, then the chain.
	if got := strings.Join(RemoveRules()[0], " "); got != "-t nat -D OUTPUT -p tcp -j SIGIL_OUTPUT" {
		t.Fatalf("first removal %q", got)
	}
}
