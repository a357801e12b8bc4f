package traffic

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// TestDestinationRuleTLSModes: ISTIO_MUTUAL is the mesh's own mTLS;
// DISABLE, SIMPLE and MUTUAL reach hosts outside the mesh only; every
// refusal names the field and the mode.
func TestDestinationRuleTLSModes(t *testing.T) {
	dr := func(host, tls string) string {
		return "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: " + host + "\n  trafficPolicy:\n    tls: " + tls + "\n"
	}
	tests := []struct {
		name, doc string
		want      []string // nil: accepted
	}{
		{"istio mutual", dr("api", "{mode: ISTIO_MUTUAL}"), nil},
		{"istio mutual, subset level", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: api\n  subsets:\n  - name: v1\n    labels: {version: v1}\n    trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n", nil},
		{"disable to ip", dr("127.0.0.1", "{mode: DISABLE}"), nil},
		{"disable to name", dr("api.example.com", "{mode: DISABLE}"), nil},
		{"simple with ca", dr("api.example.com", "{mode: SIMPLE, caCertificates: /etc/ca.pem, sni: api.example.com, subjectAltNames: [api.example.com]}"), nil},
		{"mutual with files", dr("api.example.com", "{mode: MUTUAL, clientCertificate: /etc/c.pem, privateKey: /etc/k.pem, caCertificates: /etc/ca.pem}"), nil},
		{"simple insecure", dr("api.example.com", "{mode: SIMPLE, insecureSkipVerify: true}"), nil},
		{"disable to mesh", dr("api", "{mode: DISABLE}"), []string{"spec.trafficPolicy.tls.mode", "DISABLE toward a mesh service"}},
		{"simple to mesh", dr("api.prod.svc.cluster.local", "{mode: SIMPLE}"), []string{"spec.trafficPolicy.tls.mode", "SIMPLE toward a mesh service"}},
		// A dotted name in a mesh service's form (svc.ns) is that
		// service: the refusal says how the host was read, so the user
		// sees why httpbin.org is not outside the mesh.
		{"disable to svc.ns.svc form", dr("httpbin.org.svc", "{mode: DISABLE}"), []string{"spec.trafficPolicy.tls.mode", `"httpbin.org.svc" names the mesh service httpbin in namespace org`}},
		// Dotted names are fully qualified, as Istio reads them: two
		// labels are a host outside the mesh (TestTwoLabelHostsAreOutside).
		{"disable to two labels", dr("httpbin.org", "{mode: DISABLE}"), nil},
		{"mutual per port to two labels", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: example.com\n  trafficPolicy:\n    portLevelSettings:\n    - port: {number: 443}\n      tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem}\n", nil},
		{"disable to short name", dr("localhost", "{mode: DISABLE}"), []string{`"localhost" names the mesh service localhost in namespace default`}},
		{"mutual to mesh, subset", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: api\n  subsets:\n  - name: v1\n    labels: {version: v1}\n    trafficPolicy: {tls: {mode: MUTUAL}}\n", []string{"spec.subsets[0].trafficPolicy.tls.mode", "MUTUAL toward a mesh service"}},
		// A rule for a host outside the mesh that does not say how to
		// reach it is accepted and kept apart; it opens nothing.
		{"istio mutual external", dr("api.example.com", "{mode: ISTIO_MUTUAL}"), nil},
		{"credentialName", dr("api.example.com", "{mode: MUTUAL, credentialName: client-credential}"), []string{"spec.trafficPolicy.tls.credentialName", "Kubernetes Secret"}},
		{"mutual without key", dr("api.example.com", "{mode: MUTUAL, clientCertificate: /etc/c.pem}"), []string{"spec.trafficPolicy.tls", "MUTUAL needs clientCertificate and privateKey"}},
		{"simple with key", dr("api.example.com", "{mode: SIMPLE, clientCertificate: /etc/c.pem, privateKey: /etc/k.pem}"), []string{"mode SIMPLE sends no client certificate"}},
		{"relative path", dr("api.example.com", "{mode: SIMPLE, caCertificates: ca.pem}"), []string{"spec.trafficPolicy.tls.caCertificates", "absolute"}},
		{"disable with ca", dr("api.example.com", "{mode: DISABLE, caCertificates: /etc/ca.pem}"), []string{"spec.trafficPolicy.tls.caCertificates", "not used with mode DISABLE"}},
		{"istio mutual with files", dr("api", "{mode: ISTIO_MUTUAL, privateKey: /etc/k.pem}"), []string{"spec.trafficPolicy.tls.privateKey", "not used with mode ISTIO_MUTUAL"}},
		{"istio mutual with sni", dr("api", "{mode: ISTIO_MUTUAL, sni: api.prod.example}"), nil},
		{"istio mutual with bad sni", dr("api", "{mode: ISTIO_MUTUAL, sni: '*.prod.example'}"), []string{"spec.trafficPolicy.tls.sni", "not a host name"}},
		{"istio mutual with subjectAltNames", dr("api", "{mode: ISTIO_MUTUAL, subjectAltNames: [spiffe://example.org/ns/prod/sa/api]}"), []string{"spec.trafficPolicy.tls.subjectAltNames", "not used with mode ISTIO_MUTUAL"}},
		{"unknown mode", dr("api", "{mode: STRICT}"), []string{"spec.trafficPolicy.tls.mode", `"STRICT"`}},
		{"insecure and ca", dr("api.example.com", "{mode: SIMPLE, insecureSkipVerify: true, caCertificates: /etc/ca.pem}"), []string{"spec.trafficPolicy.tls.insecureSkipVerify"}},
		{"bad sni", dr("api.example.com", "{mode: SIMPLE, sni: 'a b'}"), []string{"spec.trafficPolicy.tls.sni"}},
		{"external without tls", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: api.example.com\n  trafficPolicy: {loadBalancer: {simple: RANDOM}}\n", nil},
		{"external with subsets", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: api.example.com\n  trafficPolicy: {tls: {mode: DISABLE}}\n  subsets:\n  - name: v1\n    labels: {version: v1}\n", []string{"spec.subsets", "outside the mesh"}},
		{"external connection pool", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: api.example.com\n  trafficPolicy: {tls: {mode: DISABLE}, connectionPool: {tcp: {maxConnections: 3}}}\n", []string{"spec.trafficPolicy.connectionPool", "outside the mesh"}},
		{"external wildcard", dr("'*.example.com'", "{mode: DISABLE}"), nil},
		{"external wildcard, simple", dr("'*.example.com'", "{mode: SIMPLE}"), nil},
		{"wildcard over the mesh", dr("'*.local'", "{mode: DISABLE}"), []string{"spec.host", "covers mesh services"}},
		{"wildcard in the mesh", dr("'*.prod.svc.cluster.local'", "{mode: SIMPLE}"), []string{"spec.host", "covers mesh services"}},
		{"star", dr("'*'", "{mode: SIMPLE}"), []string{"spec.host", "covers mesh services"}},
	}
	for _, tt := range tests {
		checkParse(t, tt.name, tt.doc, tt.want)
	}
}

// TestExternalRuleLookup: a host outside the mesh is reachable only
// through a DestinationRule that says how, matched without case or
// trailing dot; two rules for one external host are refused.
func TestExternalRuleLookup(t *testing.T) {
	rs, err := Parse([]byte("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d, namespace: prod}\nspec:\n  host: Plain.Example.com\n  trafficPolicy: {tls: {mode: DISABLE}}\n"), "f.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tab := Compile(1, rs)
	for host, want := range map[string]bool{"plain.example.com": true, "plain.example.com.": true, "PLAIN.EXAMPLE.COM": true, "other.example.com": false, "127.0.0.1": false} {
		p, ok := tab.ExternalRule(host, 0)
		if ok != want {
			t.Errorf("%s: rule found %v, want %v", host, ok, want)
		}
		if ok && p.TLS.Mode != TLSDisable {
			t.Errorf("%s: policy %+v", host, p)
		}
	}
	if tab.HasRoutes(".") || tab.Policy("", "") != nil {
		t.Error("an external rule leaked into the mesh's rules")
	}
	again, _ := Parse([]byte("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: e}\nspec:\n  host: plain.example.com\n  trafficPolicy: {tls: {mode: SIMPLE}}\n"), "g.yaml")
	if err := CheckReferences(append(rs, again...)); err == nil || !strings.Contains(err.Error(), "already has DestinationRule prod/d") {
		t.Errorf("two rules for one external host: %v", err)
	}
	other, _ := Parse([]byte("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: e}\nspec:\n  host: 127.0.0.1\n  trafficPolicy: {tls: {mode: SIMPLE}}\n"), "g.yaml")
	if err := CheckReferences(append(rs, other...)); err != nil {
		t.Errorf("rules for two external hosts: %v", err)
	}
}

// portLevelSettings carry tls as the other levels do: the mesh's own mTLS
// toward a mesh service; toward a host outside the mesh, how to reach that
// port (Istio's egress TLS origination task), and nothing else per port.
func TestPortLevelTLS(t *testing.T) {
	dr := func(host, pls string) string {
		return "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: " + host + "\n  trafficPolicy:\n    portLevelSettings:\n    - " + pls + "\n"
	}
	for _, tt := range []struct {
		name, doc string
		want      []string
	}{
		{"mesh, istio mutual", dr("api", "{port: {number: 8080}, tls: {mode: ISTIO_MUTUAL}}"), nil},
		{"mesh, istio mutual with sni", dr("api", "{port: {number: 8080}, tls: {mode: ISTIO_MUTUAL, sni: api-8080.example}}"), nil},
		{"mesh, disable", dr("api", "{port: {number: 8080}, tls: {mode: DISABLE}}"), []string{"spec.trafficPolicy.portLevelSettings[0].tls", "DISABLE"}},
		{"outside, simple", dr("edition.cnn.com", "{port: {number: 443}, tls: {mode: SIMPLE}}"), nil},
		{"outside, simple with sni", dr("edition.cnn.com", "{port: {number: 443}, tls: {mode: SIMPLE, sni: edition.cnn.com}}"), nil},
		{"outside, istio mutual at port", dr("edition.cnn.com", "{port: {number: 443}, tls: {mode: ISTIO_MUTUAL}}\n    - {port: {number: 80}, tls: {mode: DISABLE}}"), []string{"spec.trafficPolicy.portLevelSettings[0].tls.mode", "ISTIO_MUTUAL toward a host outside the mesh"}},
		{"outside, load balancer at port", dr("edition.cnn.com", "{port: {number: 443}, tls: {mode: SIMPLE}, loadBalancer: {simple: RANDOM}}"), []string{"spec.trafficPolicy.portLevelSettings[0].loadBalancer", "outside the mesh"}},
		{"outside, mutual at port without key", dr("edition.cnn.com", "{port: {number: 443}, tls: {mode: MUTUAL}}"), []string{"spec.trafficPolicy.portLevelSettings[0].tls", "MUTUAL needs clientCertificate"}},
	} {
		checkParse(t, tt.name, tt.doc, tt.want)
	}
}

// TestExternalRulePerPort: a host outside the mesh is reachable at a port
// when the rule's entry for that port says how (it replaces the top level,
// as in Istio), else when the top level does; a port no level covers is
// not reachable.
func TestExternalRulePerPort(t *testing.T) {
	for _, tt := range []struct {
		name, policy string
		want         map[uint32]string // port: mode, "" for no rule
	}{
		{"port only", "{portLevelSettings: [{port: {number: 443}, tls: {mode: SIMPLE}}]}", map[uint32]string{443: TLSSimple, 80: "", 0: ""}},
		{"port replaces top", "{tls: {mode: DISABLE}, portLevelSettings: [{port: {number: 443}, tls: {mode: SIMPLE, sni: edition.cnn.com}}]}", map[uint32]string{443: TLSSimple, 80: TLSDisable, 0: TLSDisable, 8080: TLSDisable}},
		{"port replaces top, others keep it", "{tls: {mode: SIMPLE}, portLevelSettings: [{port: {number: 80}, tls: {mode: DISABLE}}]}", map[uint32]string{80: TLSDisable, 443: TLSSimple, 9000: TLSSimple}},
	} {
		rs, err := Parse([]byte("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: edition.cnn.com\n  trafficPolicy: "+tt.policy+"\n"), "f.yaml")
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		tab := Compile(1, rs)
		for port, mode := range tt.want {
			p, ok := tab.ExternalRule("Edition.CNN.com.", port)
			switch {
			case ok != (mode != ""):
				t.Errorf("%s: port %d: rule found %v, want mode %q", tt.name, port, ok, mode)
			case ok && (p.TLS.Mode != mode || len(p.PortLevelSettings) != 0):
				t.Errorf("%s: port %d: policy %+v, want mode %s", tt.name, port, p, mode)
			}
		}
	}
}

// TestExternalRuleWildcard: a wildcard DestinationRule for hosts outside
// the mesh ("*.foo.com") applies to every host it covers that has no rule
// of its own, the most specific wildcard first (Istio's rule), and never
// to mesh services.
func TestExternalRuleWildcard(t *testing.T) {
	doc := func(name, host, mode string) string {
		return "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: " + name + "}\nspec:\n  host: '" + host + "'\n  trafficPolicy: {tls: {mode: " + mode + "}}\n"
	}
	rs, err := Parse([]byte(doc("wide", "*.foo.com", "SIMPLE")+"---\n"+doc("narrow", "*.api.foo.com", "DISABLE")+"---\n"+doc("exact", "x.api.foo.com", "MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem")), "f.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckReferences(rs); err != nil {
		t.Fatal(err)
	}
	tab := Compile(1, rs)
	for host, want := range map[string]string{
		"www.foo.com": TLSSimple, "A.B.Foo.Com.": TLSSimple, "y.api.foo.com": TLSDisable,
		"x.api.foo.com": TLSMutual, "foo.com": "", "www.foo.org": "", "reviews": "", "reviews.prod.svc.cluster.local": "",
	} {
		p, ok := tab.ExternalRule(host, 443)
		switch {
		case ok != (want != ""):
			t.Errorf("%s: rule found %v, want mode %q", host, ok, want)
		case ok && p.TLS.Mode != want:
			t.Errorf("%s: mode %s, want %s", host, p.TLS.Mode, want)
		}
	}
	if tab.Policy("reviews.default", "") != nil {
		t.Error("a wildcard rule for outside hosts leaked into the mesh's rules")
	}
}

// TestTwoLabelHostsAreOutside: a DestinationRule's host of two labels
// (httpbin.org) is a host outside the mesh, found by its own name and by a
// wildcard rule that covers it (*.org), never matched as the FQDN of a
// service httpbin of namespace org.
func TestTwoLabelHostsAreOutside(t *testing.T) {
	rs, err := Parse([]byte("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d, namespace: prod}\nspec:\n  host: httpbin.org\n  trafficPolicy: {tls: {mode: DISABLE}}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: w, namespace: prod}\nspec:\n  host: '*.net'\n  trafficPolicy: {tls: {mode: SIMPLE}}\n"), "f.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tab := Compile(1, rs)
	for host, want := range map[string]string{"httpbin.org": TLSDisable, "example.net": TLSSimple, "a.example.net": TLSSimple, "example.com": ""} {
		p, ok := tab.ExternalRule(host, 0)
		if ok != (want != "") || ok && p.TLS.Mode != want {
			t.Errorf("%s: rule %+v %v, want mode %q", host, p, ok, want)
		}
	}
	if tab.Policy("httpbin.org", "") != nil {
		t.Error("httpbin.org's rule became the policy of the service httpbin of namespace org")
	}
}

// TestTwoLabelOutsideHostNeverAttachesToService: an outside host of two
// labels (httpbin.org, reviews.prod) is kept under its own key, apart from
// the service Kubernetes DNS reads it as: its DestinationRule is not that
// service's policy nor a second rule for it, and its VirtualService's
// routes are not the service's.
func TestTwoLabelOutsideHostNeverAttachesToService(t *testing.T) {
	rs := mustParse(t,
		dr("org", "httpbin", "httpbin.org", "  trafficPolicy: {loadBalancer: {simple: RANDOM}}\n"),
		dr("prod", "reviews", "reviews", "  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}\n"),
		dr("demo", "reviews-outside", "reviews.prod", "  trafficPolicy: {loadBalancer: {simple: RANDOM}}\n"),
		vsTo("demo", "ext", "httpbin.org", "httpbin.org", "", ""),
	)
	if err := CheckReferences(rs); err != nil {
		t.Fatalf("an outside host and the service of its DNS reading were taken for one host: %v", err)
	}
	tab := Compile(1, rs)
	if p := tab.Policy("httpbin.org", ""); p != nil {
		t.Errorf("the service httpbin of namespace org took httpbin.org's rule: %+v", p)
	}
	if p := tab.Policy("reviews.prod", ""); p == nil || p.LoadBalancer == nil || p.LoadBalancer.Simple != "LEAST_REQUEST" {
		t.Errorf("the service reviews of prod: policy %+v, want its own rule's LEAST_REQUEST", p)
	}
	if tab.HasRoutes("httpbin.org") {
		t.Error("the service httpbin of namespace org took httpbin.org's routes")
	}
	if !tab.HasRoutes(OutsideKey("httpbin.org")) {
		t.Error("httpbin.org lost its routes")
	}
	if m, ok := tab.Match(OutsideKey("httpbin.org"), httptest.NewRequest("GET", "/", nil), nil); !ok || m.Dests[0].Outside != "httpbin.org" {
		t.Errorf("httpbin.org's route: %+v %v, want a destination outside the mesh named httpbin.org", m.Route, ok)
	}
	if got := tab.HostLabel(OutsideKey("httpbin.org")); got != "httpbin.org" {
		t.Errorf("HostLabel = %q, want httpbin.org", got)
	}
}
