package traffic

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/sigil-mesh/sigil/naming"
)

// TLS modes of a DestinationRule's trafficPolicy.tls (Istio's
// ClientTLSSettings.TLSmode).
const (
	TLSDisable     = "DISABLE"      // plain TCP/HTTP to a host outside the mesh
	TLSSimple      = "SIMPLE"       // TLS originated to a host outside the mesh
	TLSMutual      = "MUTUAL"       // TLS with a client certificate from files
	TLSIstioMutual = "ISTIO_MUTUAL" // the mesh's own mTLS (the default)
)

// ClientTLSSettings is Istio's ClientTLSSettings: how a sidecar speaks to
// a destination. Between sidecars it is always the mesh's mTLS
// (ISTIO_MUTUAL); toward a host outside the mesh, DISABLE sends plain
// HTTP, SIMPLE and MUTUAL originate TLS checked against CACertificates
// (or the system roots). Files are read by the sidecar that sends.
type ClientTLSSettings struct {
	Mode               string   `json:"mode,omitempty"`
	ClientCertificate  string   `json:"clientCertificate,omitempty"`
	PrivateKey         string   `json:"privateKey,omitempty"`
	CACertificates     string   `json:"caCertificates,omitempty"`
	CredentialName     string   `json:"credentialName,omitempty"`
	SubjectAltNames    []string `json:"subjectAltNames,omitempty"`
	SNI                string   `json:"sni,omitempty"`
	InsecureSkipVerify *bool    `json:"insecureSkipVerify,omitempty"`
}

// Originates reports whether the settings send to a host outside the
// mesh (DISABLE, SIMPLE or MUTUAL), as opposed to the mesh's own mTLS.
func (s *ClientTLSSettings) Originates() bool {
	return s != nil && (s.Mode == TLSDisable || s.Mode == TLSSimple || s.Mode == TLSMutual)
}

// tlsSettings checks one trafficPolicy.tls (p is its path, "…​.tls").
// external says whether the DestinationRule's host is outside the mesh:
// toward a mesh service only ISTIO_MUTUAL is allowed, since Sigil's
// sidecars never speak plaintext or another TLS to each other; toward an
// external host only DISABLE, SIMPLE and MUTUAL mean anything.
//
// meshHost, toward a mesh service, says how the rule's host was read
// ("\"httpbin.org\" names the mesh service httpbin in namespace org"), so
// that a refusal shows a user why a dotted name is not outside the mesh.
func (v *validator) tlsSettings(p string, s *ClientTLSSettings, external bool, meshHost string) {
	if s == nil {
		return
	}
	mode := s.Mode
	if mode == "" {
		mode = TLSDisable // Istio's default enum value
	}
	switch mode {
	case TLSIstioMutual:
		if external {
			v.fail(p+".mode", "ISTIO_MUTUAL toward a host outside the mesh: it has no sidecar to speak the mesh's mTLS (use DISABLE, SIMPLE or MUTUAL)")
		}
		for f, set := range map[string]bool{"clientCertificate": s.ClientCertificate != "", "privateKey": s.PrivateKey != "", "caCertificates": s.CACertificates != "", "credentialName": s.CredentialName != "", "subjectAltNames": len(s.SubjectAltNames) > 0, "insecureSkipVerify": s.InsecureSkipVerify != nil} {
			if set {
				v.fail(p+"."+f, "not used with mode ISTIO_MUTUAL: the mesh's mTLS uses the workload's SPIFFE identity and checks the peer's")
			}
		}
		// sni is sent in the mesh's mTLS ClientHello, as Istio does; the
		// peer's SPIFFE ID is still what is checked.
		v.sni(p, s.SNI)
		return
	case TLSDisable, TLSSimple, TLSMutual:
		if !external {
			if meshHost != "" {
				meshHost = " (" + meshHost + ")"
			}
			v.fail(p+".mode", "%s toward a mesh service is not supported%s: Sigil's sidecars speak only the mesh's mTLS to each other (ISTIO_MUTUAL, the default); remove tls or set mode ISTIO_MUTUAL", mode, meshHost)
			return
		}
	default:
		v.fail(p+".mode", "%q: want DISABLE, SIMPLE, MUTUAL or ISTIO_MUTUAL", s.Mode)
		return
	}
	if s.CredentialName != "" {
		v.fail(p+".credentialName", "not supported: it names a Kubernetes Secret, which sidecars on plain hosts cannot read; give clientCertificate, privateKey and caCertificates as files")
	}
	if mode == TLSDisable {
		for f, set := range map[string]bool{"clientCertificate": s.ClientCertificate != "", "privateKey": s.PrivateKey != "", "caCertificates": s.CACertificates != "", "sni": s.SNI != "", "subjectAltNames": len(s.SubjectAltNames) > 0, "insecureSkipVerify": s.InsecureSkipVerify != nil} {
			if set {
				v.fail(p+"."+f, "not used with mode DISABLE (plain text)")
			}
		}
		return
	}
	switch {
	case mode == TLSMutual && s.CredentialName == "" && (s.ClientCertificate == "" || s.PrivateKey == ""):
		v.fail(p, "mode MUTUAL needs clientCertificate and privateKey")
	case mode == TLSSimple && (s.ClientCertificate != "" || s.PrivateKey != ""):
		v.fail(p, "mode SIMPLE sends no client certificate: use MUTUAL for clientCertificate and privateKey")
	}
	for f, path := range map[string]string{"clientCertificate": s.ClientCertificate, "privateKey": s.PrivateKey, "caCertificates": s.CACertificates} {
		if path != "" && !filepath.IsAbs(path) {
			v.fail(p+"."+f, "%q: want an absolute file path", path)
		}
	}
	if s.InsecureSkipVerify != nil && *s.InsecureSkipVerify && (s.CACertificates != "" || len(s.SubjectAltNames) > 0) {
		v.fail(p+".insecureSkipVerify", "true together with caCertificates or subjectAltNames: nothing would check them")
	}
	v.sni(p, s.SNI)
	for i, san := range s.SubjectAltNames {
		if san == "" || strings.ContainsAny(san, " \t\r\n") {
			v.fail(fmt.Sprintf("%s.subjectAltNames[%d]", p, i), "%q is not a name", san)
		}
	}
}

// sni checks the sni of the tls at p: a host name, without wildcard or
// port ("" is none).
func (v *validator) sni(p, sni string) {
	if sni == "" {
		return
	}
	if _, err := (naming.Resolver{}).Host(sni); errors.Is(err, naming.ErrMalformed) || strings.ContainsAny(sni, "*[]") {
		v.fail(p+".sni", "%q is not a host name", sni)
	}
}

// policyTLS checks the tls of every level of a DestinationRule's policy
// (the rule's and its subsets'; a per-port level calls tlsSettings with
// its own path the same way).
func (v *validator) policyTLS(dr *DestinationRule, external bool, namespace string) {
	meshHost := ""
	if svc := ServiceOf(dr.Spec.Host, namespace); !external && !svc.IsZero() {
		// A dotted name in a service's form (svc.ns, svc.ns.svc) is that
		// service, as the app's DNS search path resolves it: say so,
		// since Istio would read httpbin.org literally.
		meshHost = fmt.Sprintf("%s names the mesh service %s in namespace %s", naming.Quote(dr.Spec.Host), svc.Name, svc.Namespace)
	}
	// portTLS checks the tls of a policy's portLevelSettings as the
	// other levels: only the mesh's own mTLS toward a mesh service; toward
	// a host outside the mesh, how to reach that port (Istio's egress TLS
	// origination puts SIMPLE at port 443), and nothing else per port.
	portTLS := func(path string, tp *TrafficPolicy) {
		for j, ps := range tp.PortLevelSettings {
			p := fmt.Sprintf("%s.portLevelSettings[%d]", path, j)
			v.tlsSettings(p+".tls", ps.TLS, external, meshHost)
			if !external {
				continue
			}
			for f, set := range map[string]bool{"loadBalancer": ps.LoadBalancer != nil, "connectionPool": ps.ConnectionPool != nil, "outlierDetection": ps.OutlierDetection != nil} {
				if set {
					v.fail(p+"."+f, "not supported for a host outside the mesh: the sidecar sends to the host the app names, with only tls applied")
				}
			}
		}
	}
	if tp := dr.Spec.TrafficPolicy; tp != nil {
		v.tlsSettings("spec.trafficPolicy.tls", tp.TLS, external, meshHost)
		portTLS("spec.trafficPolicy", tp)
	}
	for i, s := range dr.Spec.Subsets {
		if s.TrafficPolicy != nil {
			v.tlsSettings(fmt.Sprintf("spec.subsets[%d].trafficPolicy.tls", i), s.TrafficPolicy.TLS, external, meshHost)
			portTLS(fmt.Sprintf("spec.subsets[%d].trafficPolicy", i), s.TrafficPolicy)
		}
	}
	if external && !ruleOriginates(&dr.Spec) {
		v.fail("spec.trafficPolicy.tls", "a DestinationRule for a host outside the mesh (%q) must say how to reach it: tls.mode DISABLE, SIMPLE or MUTUAL", dr.Spec.Host)
	}
	if tp := dr.Spec.TrafficPolicy; external && tp != nil {
		for f, set := range map[string]bool{"loadBalancer": tp.LoadBalancer != nil, "connectionPool": tp.ConnectionPool != nil, "outlierDetection": tp.OutlierDetection != nil} {
			if set {
				v.fail("spec.trafficPolicy."+f, "not supported for a host outside the mesh: the sidecar sends to the host the app names, with only tls applied")
			}
		}
	}
	if external && len(dr.Spec.Subsets) > 0 {
		v.fail("spec.subsets", "a host outside the mesh has no endpoints Sigil knows the labels of")
	}
}

// IsExternalHost reports whether host, as a resource names it, is a
// well-formed name or IPv4 address that names no mesh service: httpbin.org,
// reviews.prod, api.example.com and 127.0.0.1 are outside the mesh
// (naming.Resolver.ResourceHost).
func IsExternalHost(host string) bool {
	_, err := parseExternalHost(host)
	return err == nil
}

// parseExternalHost returns host's key when host is outside the mesh
// (naming.Resolver.ResourceHost: every dotted name but a service's
// svc.ns.svc forms, or an IPv4 address), and an error (wrapping naming's)
// when it is malformed, a wildcard or a mesh service.
func parseExternalHost(host string) (string, error) {
	h, err := (naming.Resolver{}).ResourceHost(host)
	switch {
	case err == nil && h.Kind == naming.OutsideHost:
		return h.Name.String(), nil
	case err == nil && h.Kind == naming.WildcardHost:
		return "", fmt.Errorf("traffic: %q: wildcard hosts are not supported", host)
	case err == nil:
		return "", fmt.Errorf("traffic: %q is a mesh service", host)
	case !errors.Is(err, naming.ErrNotInMesh) || strings.HasPrefix(host, "["):
		return "", fmt.Errorf("traffic: %q: %w", host, err)
	}
	return externalKey(host), nil // an IPv4 address
}

// ruleOriginates reports whether a DestinationRule says how to reach a
// host outside the mesh, for every port or for some: its
// trafficPolicy.tls or one of its portLevelSettings[].tls is DISABLE,
// SIMPLE or MUTUAL.
func ruleOriginates(spec *DestinationRuleSpec) bool {
	tp := spec.TrafficPolicy
	if tp == nil {
		return false
	}
	if tp.TLS.Originates() {
		return true
	}
	for _, ps := range tp.PortLevelSettings {
		if ps.TLS.Originates() {
			return true
		}
	}
	return false
}

// ruleHost checks a DestinationRule's host, which may be outside the mesh
// when its tls says how to reach it, and returns whether it is.
func (v *validator) ruleHost(dr *DestinationRule) bool {
	if IsExternalHost(dr.Spec.Host) && ruleOriginates(&dr.Spec) {
		return true
	}
	if strings.Contains(dr.Spec.Host, "*") && ruleOriginates(&dr.Spec) {
		if _, ok := externalPattern(dr.Spec.Host); ok {
			return true
		}
		v.fail("spec.host", "%s: a wildcard that covers mesh services cannot say how to reach hosts outside the mesh (tls DISABLE, SIMPLE and MUTUAL): name a suffix outside the cluster domain, such as \"*.example.com\"", naming.Quote(dr.Spec.Host))
		return true
	}
	v.host("spec.host", dr.Spec.Host, true)
	return false
}

// externalPattern returns host as a wildcard pattern for hosts outside
// the mesh ("*.foo.com"), and whether it is one: a wildcard that cannot
// match any mesh service's FQDN (neither inside nor around
// "*.svc.<cluster domain>"). "*" and "*.local" cover mesh services, so
// they are not.
func externalPattern(host string) (naming.HostPattern, bool) {
	p, err := naming.ParseHostPattern(host)
	if err != nil || !p.IsWildcard() || p.String() == "*" {
		return naming.HostPattern{}, false
	}
	mesh, err := naming.ParseHostPattern("*.svc." + naming.Resolver{}.ClusterDomain())
	if err != nil || p.SubsetOf(mesh) || mesh.SubsetOf(p) {
		return naming.HostPattern{}, false
	}
	return p, true
}

// IsExternalRuleHost reports whether a DestinationRule's host names hosts
// outside the mesh: one such host (IsExternalHost) or a wildcard that
// covers only such hosts ("*.foo.com").
func IsExternalRuleHost(host string) bool {
	_, wild := externalPattern(host)
	return wild || IsExternalHost(host)
}

// ExternalRule returns the DestinationRule policy for port of host
// (without its port) outside the mesh, and whether it says how to reach
// that port. The rule is the one for host itself, else the most specific
// wildcard rule that covers it ("*.api.foo.com" before "*.foo.com", as
// Istio picks). As in Istio, the rule's portLevelSettings entry for port
// replaces its top-level policy for that port; port 0 (none known) takes
// the top level. A request for a host outside the mesh leaves the sidecar
// only when the policy at its port is DISABLE, SIMPLE or MUTUAL: a port
// no level of the rule covers is refused like a host without a rule.
// With SIMPLE or MUTUAL and no sni, the sidecar sends the host the app
// named as SNI (proxy's originationTLS), also under a wildcard rule.
func (t *Table) ExternalRule(host string, port uint32) (*TrafficPolicy, bool) {
	if t == nil || t.more.external == nil {
		return nil, false
	}
	r, ok := t.more.external.lookup(externalKey(host))
	if !ok {
		return nil, false
	}
	p := atPort(r.Policy, port)
	if p == nil || !p.TLS.Originates() {
		return nil, false
	}
	return p, true
}

// addExternalRule keeps a DestinationRule for a host outside the mesh (or
// a wildcard of such hosts), and reports whether it was one.
func (t *Table) addExternalRule(r Resource, rule *Rule) bool {
	if !ruleOriginates(&r.DR.Spec) {
		return false
	}
	key, wild := "", false
	if p, ok := externalPattern(r.DR.Spec.Host); ok {
		key, wild = p.String(), true
	} else if k, err := parseExternalHost(r.DR.Spec.Host); err == nil {
		key = k
	} else {
		return false
	}
	if t.more.external == nil {
		t.more.external = newOutsideIndex[*Rule]()
	}
	t.more.external.set(key, wild, rule)
	return true
}
