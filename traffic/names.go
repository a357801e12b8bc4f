package traffic

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits of Kubernetes object names (k8s.io/apimachinery validation):
// metadata.name is a DNS-1123 subdomain, metadata.namespace a DNS-1123
// label.
const (
	MaxNameLength      = 253
	MaxNamespaceLength = 63
)

// Rules as Kubernetes words them, for errors.
const (
	nameRule      = "must be a lowercase RFC 1123 subdomain: at most 253 characters of a-z, 0-9, '-' and '.', starting and ending with a-z or 0-9 (e.g. 'reviews' or 'reviews.v1')"
	namespaceRule = "must be a lowercase RFC 1123 label: at most 63 characters of a-z, 0-9 and '-', starting and ending with a-z or 0-9 (e.g. 'default')"
)

// ValidateName checks a metadata.name: a DNS-1123 subdomain of at most
// 253 characters, each dot-separated part a label of a-z, 0-9 and inner
// '-' (as Kubernetes' IsDNS1123Subdomain). The error states the rule.
func ValidateName(name string) error {
	if !isDNS1123Subdomain(name) {
		return fmt.Errorf("traffic: %s %s", quoteName(name), nameRule)
	}
	return nil
}

// ValidateNamespace checks a metadata.namespace: a DNS-1123 label of at
// most 63 characters (as Kubernetes' IsDNS1123Label).
func ValidateNamespace(ns string) error {
	if len(ns) > MaxNamespaceLength || !isDNS1123Label(ns) {
		return fmt.Errorf("traffic: %s %s", quoteName(ns), namespaceRule)
	}
	return nil
}

// ValidateMeta checks a resource's namespace and name, naming the kind
// and the field: "VirtualService: metadata.name "a/b" must be ...".
func ValidateMeta(kind, namespace, name string) error {
	if err := ValidateNamespace(namespace); err != nil {
		return fmt.Errorf("traffic: %s %s: metadata.namespace %w", kind, quoteName(name), bare{err})
	}
	if err := ValidateName(name); err != nil {
		return fmt.Errorf("traffic: %s in namespace %s: metadata.name %w", kind, namespace, bare{err})
	}
	return nil
}

func isDNS1123Subdomain(s string) bool {
	if s == "" || len(s) > MaxNameLength {
		return false
	}
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '.' {
			if !isDNS1123Label(s[start:i]) {
				return false
			}
			start = i + 1
		}
	}
	return true
}

// isDNS1123Label: 1 to 63 of a-z, 0-9 and '-', not starting or ending
// with '-'.
func isDNS1123Label(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// quoteName quotes a name for an error message: Go-escaped ASCII (so no
// control character reaches a terminal or a log) and cut to 64
// characters, with the length when cut (a 200 KB name must not become a
// 200 KB error).
func quoteName(s string) string {
	const show = 64
	if len(s) <= show {
		return strconv.QuoteToASCII(s)
	}
	cut := show
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.QuoteToASCII(s[:cut]) + "... (" + strconv.Itoa(len(s)) + " bytes)"
}

// labelRule is Kubernetes' rule for a label value and a label key's name.
const labelRule = "at most 63 characters of A-Z, a-z, 0-9, '-', '_' and '.', starting and ending with a letter or digit"

// ValidateLabel checks a label as Kubernetes does: the key an optional
// DNS-1123 subdomain prefix and '/', then a name of labelRule; the value
// empty or of labelRule. Sidecars' labels (--label) are what
// DestinationRule subsets select, and are listed by `sigil get`.
func ValidateLabel(key, value string) error {
	name := key
	if prefix, rest, ok := strings.Cut(key, "/"); ok {
		if !isDNS1123Subdomain(prefix) {
			return fmt.Errorf("traffic: label key %s: the prefix %s", quoteName(key), nameRule)
		}
		name = rest
	}
	if !isLabelValue(name) || name == "" {
		return fmt.Errorf("traffic: label key %s: the name must be %s", quoteName(key), labelRule)
	}
	if !isLabelValue(value) {
		return fmt.Errorf("traffic: label %s: value %s must be empty or %s", quoteName(key), quoteName(value), labelRule)
	}
	return nil
}

func isLabelValue(s string) bool {
	if s == "" {
		return true
	}
	if len(s) > 63 || !isAlnum(s[0]) || !isAlnum(s[len(s)-1]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}
