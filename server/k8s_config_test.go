package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/k8s/crdsource"
)

func vsObject(name string) crdsource.Object {
	return crdsource.Object{Group: "networking.istio.io", Kind: "VirtualService", Namespace: "default", Name: name}
}

func vsDoc(name, extra string) []byte {
	return []byte(`{"apiVersion":"networking.istio.io/v1","kind":"VirtualService","metadata":{"name":"` + name + `","namespace":"default"},"spec":{"hosts":["` + name + `"],"http":[{"route":[{"destination":{"host":"` + name + `"}}]` + extra + `}]}}`)
}

func adminApply(t *testing.T, s *Server, yaml string) (int, string) {
	t.Helper()
	body, _ := json.Marshal(adminv1.ApplyRequest{Files: []adminv1.File{{Name: "x.yaml", Content: yaml}}})
	w := httptest.NewRecorder()
	s.adminHandler().ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/config", strings.NewReader(string(body))))
	return w.Code, w.Body.String()
}

func adminDelete(t *testing.T, s *Server, name string) (int, string) {
	t.Helper()
	w := httptest.NewRecorder()
	s.adminHandler().ServeHTTP(w, httptest.NewRequest(http.MethodDelete, "/v1/config/virtualservices/default/"+name, nil))
	return w.Code, w.Body.String()
}

// Objects from Kubernetes go through the path sigil apply takes: a
// refused one gets the reason and the message sigil apply prints for
// the same document; each side's resources are its own (a Conflict
// naming where the resource came from), so a server that also takes
// sigil apply never loses what was applied there to Kubernetes, nor
// the reverse.
func TestConfigFromKubernetesSharesApplyPath(t *testing.T) {
	ctx := context.Background()
	s, _ := storeServer(t)
	st := kubeConfigStore{s}

	if err := st.Apply(ctx, vsObject("kube"), vsDoc("kube", "")); err != nil {
		t.Fatalf("valid object refused: %v", err)
	}
	if code, body := adminApply(t, s, "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: local, namespace: default}\nspec: {hosts: [local], http: [{route: [{destination: {host: local}}]}]}\n"); code != http.StatusOK {
		t.Fatalf("sigil apply: %d %s", code, body)
	}

	badField := `,"mirrorPercent2":1`
	_, adminBody := adminApply(t, s, string(vsDoc("bad", badField)))
	var apiErr adminv1.APIError
	_ = json.Unmarshal([]byte(adminBody), &apiErr)

	tests := []struct {
		name       string
		apply      func() error
		reason     string
		msgHas     []string
		storedKube int // resources stored from Kubernetes afterwards
	}{
		{"a field Sigil does not support", func() error { return st.Apply(ctx, vsObject("bad"), vsDoc("bad", badField)) },
			ReasonInvalid, []string{`field "mirrorPercent2" is not supported`, "spec.http[0]"}, 1},
		{"a name sigil apply holds", func() error { return st.Apply(ctx, vsObject("local"), vsDoc("local", "")) },
			ReasonConflict, []string{"VirtualService default/local already comes from sigil apply", "sigil delete"}, 1},
		{"an unchanged object", func() error { return st.Apply(ctx, vsObject("kube"), vsDoc("kube", "")) }, "", nil, 1},
	}
	for _, tt := range tests {
		err := tt.apply()
		var ref *crdsource.Refusal
		switch {
		case tt.reason == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.reason != "" && !errors.As(err, &ref):
			t.Errorf("%s: %v, want a refusal", tt.name, err)
		case tt.reason != "" && ref.Reason != tt.reason:
			t.Errorf("%s: reason %s, want %s", tt.name, ref.Reason, tt.reason)
		}
		for _, want := range tt.msgHas {
			if ref == nil || !strings.Contains(ref.Message, want) {
				t.Errorf("%s: message %v does not say %q", tt.name, ref, want)
			}
		}
		if objs, _ := st.Stored(ctx); len(objs) != tt.storedKube {
			t.Errorf("%s: %d objects stored from Kubernetes, want %d", tt.name, len(objs), tt.storedKube)
		}
	}
	// The text sigil apply prints, less the file and document names.
	err := st.Apply(ctx, vsObject("bad"), vsDoc("bad", badField))
	var ref *crdsource.Refusal
	if !errors.As(err, &ref) || "traffic: x.yaml: document 1: "+ref.Message != apiErr.Message {
		t.Errorf("refusal %q\nsigil apply %q", ref.Message, apiErr.Message)
	}

	// sigil apply and delete leave Kubernetes' resource alone.
	if code, body := adminApply(t, s, string(vsDoc("kube", ""))); code != http.StatusConflict || !strings.Contains(body, "Kubernetes object VirtualService.networking.istio.io/default/kube") {
		t.Errorf("sigil apply over a Kubernetes object: %d %s", code, body)
	}
	if code, body := adminDelete(t, s, "kube"); code != http.StatusConflict || !strings.Contains(body, "kubectl delete") {
		t.Errorf("sigil delete of a Kubernetes object: %d %s", code, body)
	}
	// Kubernetes' delete removes its own only.
	if err := st.Delete(ctx, vsObject("kube")); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(ctx, vsObject("local")); err != nil {
		t.Fatal(err)
	}
	rs, _, _ := s.store.ListResources(ctx, "")
	if len(rs) != 1 || rs[0].Name != "local" || rs[0].Origin != "" {
		t.Errorf("stored after the deletes: %+v, want sigil apply's local only", rs)
	}
}
