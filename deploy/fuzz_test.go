package deploy

import (
	"testing"
)

// FuzzRenderParams: whatever a user passes to `sigil install`, Render
// either refuses it or prints exactly the objects of the defaults, each
// with its kind and name: no parameter adds, drops or renames an object
// (a newline or quote in a value would inject YAML).
func FuzzRenderParams(f *testing.F) {
	f.Add("example.org", "", "", "")
	f.Add("example.org", "mesh", "eu1", "registry.example:5000/sigil:v1")
	f.Add("example.org\"\nkind: Secret", "a", "b", "c")
	f.Add("example.org", "x\n---\napiVersion: v1", "c", "i")
	f.Add("example.org", "ns", "c{{.Image}}", "i:1")
	f.Add("example.org", "ns", "c", "img # comment")
	base, err := Render(Params{TrustDomain: "example.org"})
	if err != nil {
		f.Fatal(err)
	}
	want, err := Objects(base)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, td, ns, cluster, image string) {
		out, err := Render(Params{TrustDomain: td, Namespace: ns, Cluster: cluster, Image: image})
		if err != nil {
			return
		}
		got, err := Objects(out)
		if err != nil {
			t.Fatalf("Render(%q, %q, %q, %q) printed manifests that do not parse: %v", td, ns, cluster, image, err)
		}
		if len(got) != len(want) {
			t.Fatalf("Render(%q, %q, %q, %q): %d objects, the defaults have %d", td, ns, cluster, image, len(got), len(want))
		}
		for i := range got {
			if got[i].Kind() != want[i].Kind() || (got[i].Name() != want[i].Name() && got[i].Kind() != "Namespace") {
				t.Fatalf("Render(%q, %q, %q, %q): object %d is %s %s, want %s %s", td, ns, cluster, image, i, got[i].Kind(), got[i].Name(), want[i].Kind(), want[i].Name())
			}
		}
	})
}
