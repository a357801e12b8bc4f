package deploy

// The CustomResourceDefinitions Sigil ships are in deploy/crds: Istio's
// VirtualService and DestinationRule (networking.istio.io, for clusters
// without Istio) and Sigil's Policy (security.sigil.dev). Gateway API's
// CRDs are not Sigil's: install the standard channel of Gateway API v1.6.

import (
	"bytes"
	"embed"
	"io/fs"
	"slices"
)

//go:embed crds/*.yaml
var crdFiles embed.FS

// CRDFiles are the CRD manifests, one file per CRD, under crds/.
func CRDFiles() fs.FS { return crdFiles }

// CRDs returns every CRD manifest Sigil ships as one YAML stream
// (documents separated by "---"), in file name order, for `kubectl
// apply -f -`.
func CRDs() []byte {
	names, _ := fs.Glob(crdFiles, "crds/*.yaml") // the pattern is valid
	slices.Sort(names)
	var out bytes.Buffer
	for _, name := range names {
		b, _ := fs.ReadFile(crdFiles, name) // embedded: always readable
		out.WriteString("---\n# Source: deploy/" + name + "\n")
		out.Write(bytes.TrimSpace(b))
		out.WriteByte('\n')
	}
	return out.Bytes()
}
