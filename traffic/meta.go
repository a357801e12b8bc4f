package traffic

import (
	"fmt"

	"github.com/sigil-mesh/sigil/naming"
)

// ValidateMeta checks a resource's namespace and name by Kubernetes'
// rules (naming.ValidNamespace, naming.ValidName), naming the kind and
// the field: "VirtualService in namespace default: metadata.name "a/b"
// must be ...".
func ValidateMeta(kind, namespace, name string) error {
	if !naming.ValidNamespace(namespace) {
		return fmt.Errorf("traffic: %s %s: metadata.namespace %s %s", kind, naming.Quote(name), naming.Quote(namespace), naming.NamespaceRule)
	}
	if !naming.ValidName(name) {
		return fmt.Errorf("traffic: %s in namespace %s: metadata.name %s %s", kind, namespace, naming.Quote(name), naming.NameRule)
	}
	return nil
}
