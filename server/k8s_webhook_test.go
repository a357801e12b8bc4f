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

// TestWebhookFlagsNeedKubernetes: without --kubernetes the webhook's
// flags at their defaults pass (they are always filled in), and any other
// value is refused rather than ignored.
func TestWebhookFlagsNeedKubernetes(t *testing.T) {
	defaults := InjectConfig{Bind: DefaultWebhookBind, ConfigName: inject.DefaultWebhookConfig, ProxyImage: inject.DefaultImage,
		ProxyCPU: inject.DefaultCPURequest, ProxyMemory: inject.DefaultMemoryRequest}
	if errs := (&KubeConfig{Inject: defaults}).check(); len(errs) != 0 {
		t.Fatalf("defaults refused: %v", errs)
	}
	for _, tc := range []struct {
		flag string
		mod  func(*InjectConfig)
	}{
		{"--webhook-bind", func(w *InjectConfig) { w.Bind = ":9443" }},
		{"--webhook-config-name", func(w *InjectConfig) { w.ConfigName = "other" }},
		{"--webhook-tls-san", func(w *InjectConfig) { w.TLSSANs = []string{"127.0.0.1"} }},
		{"--inject-proxy-image", func(w *InjectConfig) { w.ProxyImage = "mine" }},
		{"--inject-proxy-cpu", func(w *InjectConfig) { w.ProxyCPU = "1" }},
		{"--inject-proxy-memory", func(w *InjectConfig) { w.ProxyMemory = "1Gi" }},
	} {
		w := defaults
		tc.mod(&w)
		errs := (&KubeConfig{Inject: w}).check()
		if len(errs) != 1 || !strings.Contains(errs[0].Error(), tc.flag+" needs --kubernetes") {
			t.Errorf("%s without --kubernetes: %v", tc.flag, errs)
		}
	}
}
