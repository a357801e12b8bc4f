package selector

import "testing"

func TestParseK8s(t *testing.T) {
	for _, ok := range []string{"k8s:ns:prod", "k8s:sa:web", "k8s:pod-uid:0b2c", "k8s:pod-label:app:web", "k8s:pod-label:app.kubernetes.io/name:", "k8s:container-name:app", "k8s:pod-name:web-1"} {
		if _, err := Parse(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"k8s:ns", "k8s:ns:", "k8s:namespace:prod", "k8s:pod-label:app", "k8s:sa:a:b"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
	if got := K8sLabel("app", "web").String(); got != "k8s:pod-label:app:web" {
		t.Errorf("K8sLabel = %s", got)
	}
}
