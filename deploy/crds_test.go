package deploy

import (
	"bytes"
	"io/fs"
	"strings"
	"testing"

	"github.com/sigil-mesh/sigil/k8s/crdsource"
	"sigs.k8s.io/yaml"
)

// crd is the part of apiextensions.k8s.io/v1 CustomResourceDefinition
// the test reads.
type crd struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Group string `json:"group"`
		Names struct {
			Kind   string `json:"kind"`
			Plural string `json:"plural"`
		} `json:"names"`
		Scope    string `json:"scope"`
		Versions []struct {
			Name         string         `json:"name"`
			Served       bool           `json:"served"`
			Storage      bool           `json:"storage"`
			Subresources map[string]any `json:"subresources"`
			Schema       struct {
				OpenAPIV3Schema struct {
					Properties map[string]map[string]any `json:"properties"`
				} `json:"openAPIV3Schema"`
			} `json:"schema"`
		} `json:"versions"`
	} `json:"spec"`
}

// Every CRD Sigil ships defines a kind crdsource watches, serves every
// version it reads, stores one, has the status subresource it writes
// Accepted to, and keeps the spec's unknown fields for Sigil to refuse
// by name.
func TestCRDsMatchTheWatchedKinds(t *testing.T) {
	kinds := map[string]crdsource.Kind{}
	for _, k := range []crdsource.Kind{crdsource.VirtualService, crdsource.DestinationRule, crdsource.Policy} {
		kinds[k.Resource+"."+k.Group] = k
	}
	names, err := fs.Glob(CRDFiles(), "crds/*.yaml")
	if err != nil || len(names) != len(kinds) {
		t.Fatalf("CRD files %v (%v), want one per kind of %v", names, err, kinds)
	}
	for _, name := range names {
		b, _ := fs.ReadFile(CRDFiles(), name)
		var c crd
		if err := yaml.Unmarshal(b, &c); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		k, ok := kinds[c.Metadata.Name]
		if !ok {
			t.Errorf("%s: CRD %s is of no watched kind", name, c.Metadata.Name)
			continue
		}
		delete(kinds, c.Metadata.Name)
		if c.APIVersion != "apiextensions.k8s.io/v1" || c.Kind != "CustomResourceDefinition" || c.Spec.Scope != "Namespaced" ||
			c.Spec.Group != k.Group || c.Spec.Names.Kind != k.Kind || c.Spec.Names.Plural != k.Resource {
			t.Errorf("%s: %+v does not define %+v", name, c, k)
		}
		served, stored := map[string]bool{}, 0
		for _, v := range c.Spec.Versions {
			served[v.Name] = v.Served
			if v.Storage {
				stored++
			}
			if _, ok := v.Subresources["status"]; !ok {
				t.Errorf("%s %s: no status subresource", name, v.Name)
			}
			spec := v.Schema.OpenAPIV3Schema.Properties["spec"]
			if spec["x-kubernetes-preserve-unknown-fields"] != true {
				t.Errorf("%s %s: spec drops unknown fields", name, v.Name)
			}
		}
		for _, v := range k.Versions {
			if !served[v] {
				t.Errorf("%s: version %s not served", name, v)
			}
		}
		if stored != 1 {
			t.Errorf("%s: %d storage versions, want 1", name, stored)
		}
	}
	for n := range kinds {
		t.Errorf("no CRD for %s", n)
	}
	all := CRDs()
	if n := bytes.Count(all, []byte("\nkind: CustomResourceDefinition\n")); n != len(names) || !strings.HasPrefix(string(all), "---\n") {
		t.Errorf("CRDs() holds %d CRDs, want %d", n, len(names))
	}
}
