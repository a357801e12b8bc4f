package server

import (
	"slices"
	"strings"
	"testing"

	"github.com/sigil-mesh/sigil/k8s/inject"
)

// TestWebhookFlagsChecked: the webhook's flags are refused at start when
// wrong, each named, and its defaults filled in.
func TestWebhookFlagsChecked(t *testing.T) {
	for _, tc := range []struct {
		name string
		w    InjectConfig
		want string // "" for accepted
	}{
		{"defaults", InjectConfig{Bind: DefaultWebhookBind}, ""},
		{"off", InjectConfig{Bind: "", ConfigName: "Not A Name"}, ""},
		{"ip and dns sans", InjectConfig{Bind: "127.0.0.1:0", TLSSANs: []string{"127.0.0.1", "::1", "webhook.example.org"}}, ""},
		{"bind", InjectConfig{Bind: "8443"}, "--webhook-bind"},
		{"config name", InjectConfig{Bind: ":8443", ConfigName: "Sigil_Injector"}, "--webhook-config-name"},
		{"wildcard san", InjectConfig{Bind: ":8443", TLSSANs: []string{"*.example.org"}}, "--webhook-tls-san"},
		{"too many sans", InjectConfig{Bind: ":8443", TLSSANs: slices.Repeat([]string{"a.example.org"}, 15)}, "at most 14"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := KubeConfig{Enabled: true, Inject: tc.w}
			errs := k.check()
			if tc.want == "" {
				if len(errs) > 0 {
					t.Fatalf("refused: %v", errs)
				}
				if tc.w.Bind != "" && k.Inject.ConfigName != inject.DefaultWebhookConfig && tc.w.ConfigName == "" {
					t.Fatalf("config name default not filled in: %q", k.Inject.ConfigName)
				}
				return
			}
			if len(errs) != 1 || !strings.Contains(errs[0].Error(), tc.want) {
				t.Fatalf("errors %v, want one naming %q", errs, tc.want)
			}
		})
	}
}
