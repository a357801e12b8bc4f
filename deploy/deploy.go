// Package deploy holds Sigil's Kubernetes manifests and renders them for
// one installation. The manifests are templates under deploy/kubernetes/
// (namespace, service accounts, least-privilege RBAC, the server's
// Deployment, PodDisruptionBudget and Services, the agents' DaemonSet, the
// injection webhook's configuration), filled in with Params: the trust
// domain, the namespace, the cluster's name and the image. `sigil install`
// prints what Render returns, for `kubectl apply -f -`.
//
//	out, err := deploy.Render(deploy.Params{TrustDomain: "example.org"})
package deploy

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strings"
	"text/template"

	"github.com/sigil-mesh/sigil/naming"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"sigs.k8s.io/yaml"
)

//go:embed kubernetes/*.yaml
var kubernetesFiles embed.FS

// Defaults of Params' optional fields.
const (
	// DefaultNamespace is the namespace of Sigil's own objects (the same
	// as kube.DefaultNamespace, which the daemons default to).
	DefaultNamespace = "sigil-system"
	// DefaultCluster is the cluster's name in agent IDs (the same as
	// sigil-server's --k8s-cluster default).
	DefaultCluster = "cluster"
	// DefaultImage is the image holding all four binaries, as
	// deploy/Dockerfile builds it (`make image`). It is not published:
	// build it and push it where the cluster pulls from, and pass that
	// name to `sigil install --image`.
	DefaultImage = "ghcr.io/sigil-mesh/sigil:latest"
)

// Params are what differs between installations.
type Params struct {
	// TrustDomain is the mesh's SPIFFE trust domain, such as example.org
	// (required).
	TrustDomain string
	// Namespace holds Sigil's own objects ("" is DefaultNamespace).
	Namespace string
	// Cluster names the cluster in agent IDs,
	// spiffe://TD/sigil/agent/k8s_psat/CLUSTER/NODE ("" is DefaultCluster).
	Cluster string
	// Image is the container image of the server, the agents and the
	// injected sidecars ("" is DefaultImage).
	Image string
	// SkipIstioCRDs leaves out Sigil's copies of Istio's VirtualService
	// and DestinationRule CRDs, for a cluster where Istio installed its
	// own (applying Sigil's copies would replace them; Sigil reads
	// Istio's).
	SkipIstioCRDs bool
}

// istioCRDPrefix starts the names of the CRD files that are copies of
// Istio's (deploy/crds).
const istioCRDPrefix = "crds/networking.istio.io_"

// imageRef is a container image reference as the distribution spec
// writes one: [HOST[:PORT]/]PATH[:TAG][@sha256:DIGEST]. It admits nothing
// that YAML or a shell would read as syntax.
var imageRef = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)*` +
	`(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$`)

// withDefaults returns p with its empty optional fields set, or an error
// naming every field that is wrong.
func (p Params) withDefaults() (Params, error) {
	if p.Namespace == "" {
		p.Namespace = DefaultNamespace
	}
	if p.Cluster == "" {
		p.Cluster = DefaultCluster
	}
	if p.Image == "" {
		p.Image = DefaultImage
	}
	var errs []error
	if p.TrustDomain == "" {
		errs = append(errs, errors.New("--trust-domain is required"))
	} else if td, err := spiffeid.TrustDomainFromString(p.TrustDomain); err != nil {
		errs = append(errs, fmt.Errorf("--trust-domain %s: %w", naming.Quote(p.TrustDomain), err))
	} else if td.Name() != p.TrustDomain {
		// go-spiffe accepts spiffe://td too; the server's flag takes
		// the bare name.
		errs = append(errs, fmt.Errorf("--trust-domain %s: give the trust domain's name alone, such as %s", naming.Quote(p.TrustDomain), td.Name()))
	}
	if !naming.ValidNamespace(p.Namespace) {
		errs = append(errs, fmt.Errorf("--namespace %s: not a Kubernetes namespace name (a DNS-1123 label)", naming.Quote(p.Namespace)))
	}
	if err := naming.ValidateNodeName(p.Cluster); err != nil {
		errs = append(errs, fmt.Errorf("--cluster %s: %w", naming.Quote(p.Cluster), err))
	}
	if len(p.Image) > 512 || !imageRef.MatchString(p.Image) {
		errs = append(errs, fmt.Errorf("--image %s: not an image reference such as registry.example/sigil:v1", naming.Quote(p.Image)))
	}
	if len(errs) > 0 {
		return p, fmt.Errorf("deploy: %w", errors.Join(errs...))
	}
	return p, nil
}

// manifestSet is a group of manifest files: the files of fsys matching
// glob, in name order.
type manifestSet struct {
	fsys fs.FS
	glob string
}

// manifestSets lists what Render prints, in apply order: the CRDs Sigil
// ships (deploy/crds, crds.go) come first, so that objects of their kinds
// that follow apply, then the templates of deploy/kubernetes.
func manifestSets() []manifestSet {
	return []manifestSet{
		{fsys: crdFiles, glob: "crds/*.yaml"},
		{fsys: kubernetesFiles, glob: "kubernetes/*.yaml"},
	}
}

// Render returns the manifests for p as one YAML stream (documents
// separated by "---"), each checked to be a Kubernetes object.
func Render(p Params) ([]byte, error) {
	p, err := p.withDefaults()
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	fmt.Fprintf(&out, "# Sigil for trust domain %s: namespace %s, cluster %s, image %s.\n# Printed by `sigil install`; apply with `kubectl apply -f -` (docs/kubernetes.md).\n",
		p.TrustDomain, p.Namespace, p.Cluster, p.Image)
	for _, set := range manifestSets() {
		names, err := fs.Glob(set.fsys, set.glob)
		if err != nil {
			return nil, fmt.Errorf("deploy: %s: %w", set.glob, err)
		}
		slices.Sort(names)
		if p.SkipIstioCRDs {
			names = slices.DeleteFunc(names, func(n string) bool { return strings.HasPrefix(n, istioCRDPrefix) })
		}
		for _, name := range names {
			text, err := fs.ReadFile(set.fsys, name)
			if err != nil {
				return nil, fmt.Errorf("deploy: %w", err)
			}
			tmpl, err := template.New(path.Base(name)).Option("missingkey=error").Parse(string(text))
			if err != nil {
				return nil, fmt.Errorf("deploy: %s: %w", name, err)
			}
			var doc bytes.Buffer
			if err := tmpl.Execute(&doc, p); err != nil {
				return nil, fmt.Errorf("deploy: %s: %w", name, err)
			}
			if _, err := Objects(doc.Bytes()); err != nil {
				return nil, fmt.Errorf("deploy: %s renders to no Kubernetes objects: %w", name, err)
			}
			fmt.Fprintf(&out, "---\n# Source: deploy/%s\n", name)
			out.Write(bytes.TrimSpace(doc.Bytes()))
			out.WriteByte('\n')
		}
	}
	return out.Bytes(), nil
}

// Object is one Kubernetes object of a manifest, decoded.
type Object map[string]any

// APIVersion is the object's apiVersion, such as apps/v1.
func (o Object) APIVersion() string { s, _ := o["apiVersion"].(string); return s }

// Kind is the object's kind, such as Deployment.
func (o Object) Kind() string { s, _ := o["kind"].(string); return s }

// Name is the object's metadata.name.
func (o Object) Name() string { s, _ := o.metadata()["name"].(string); return s }

// Namespace is the object's metadata.namespace ("" for a cluster-scoped
// object).
func (o Object) Namespace() string { s, _ := o.metadata()["namespace"].(string); return s }

func (o Object) metadata() map[string]any { m, _ := o["metadata"].(map[string]any); return m }

// Objects decodes a YAML stream of manifests into its objects, skipping
// documents that hold only comments; a document that is not YAML, or not
// an object with apiVersion, kind and metadata.name, is an error.
func Objects(stream []byte) ([]Object, error) {
	var objs []Object
	for i, doc := range splitDocuments(stream) {
		var o Object
		if err := yaml.UnmarshalStrict([]byte(doc), &o); err != nil {
			return nil, fmt.Errorf("deploy: document %d: %w", i+1, err)
		}
		if o == nil {
			continue
		}
		if o.APIVersion() == "" || o.Kind() == "" || o.Name() == "" {
			return nil, fmt.Errorf("deploy: document %d: not a Kubernetes object (apiVersion, kind and metadata.name are required)", i+1)
		}
		objs = append(objs, o)
	}
	return objs, nil
}

// splitDocuments cuts a YAML stream at its "---" lines.
func splitDocuments(stream []byte) []string {
	var docs []string
	var cur strings.Builder
	for line := range strings.Lines(string(stream)) {
		if strings.TrimRight(line, " \t\r\n") == "---" {
			docs = append(docs, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteString(line)
	}
	return append(docs, cur.String())
}
