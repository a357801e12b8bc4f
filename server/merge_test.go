package server

import (
	"strings"
	"testing"

	"github.com/sigil-mesh/sigil/registry"
	"github.com/sigil-mesh/sigil/traffic"
)

// A stored resource that a rule added since refuses blocks other applies
// (naming it) but can be fixed by applying a good one over it.
func TestStoredResourceRefusedByNewerRulesCanBeReplaced(t *testing.T) {
	legacy := registry.StoredResource{Kind: traffic.KindVirtualService, Namespace: "default", Name: "old",
		Spec: []byte(`{"hosts":["api"],"http":[{"redirect":{"uri":"new"}}]}`)}
	parse := func(name string) []traffic.Resource {
		rs, err := traffic.Parse([]byte("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: "+name+"}\nspec: {hosts: [api], http: [{redirect: {uri: /new}}]}\n"), "t.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return rs
	}
	merged, old, err := mergeResources([]registry.StoredResource{legacy}, parse("old"))
	if err != nil || len(merged) != 1 || string(old[merged[0].Key()]) != string(legacy.Spec) {
		t.Fatalf("fixing the stored resource: %v, %d merged", err, len(merged))
	}
	if _, _, err := mergeResources([]registry.StoredResource{legacy}, parse("other")); err == nil || !strings.Contains(err.Error(), "stored VirtualService default/old") {
		t.Fatalf("another apply beside it: %v", err)
	}
}
