package inject

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
)

// nsLabels is a NamespaceLabels over a map; a namespace it lacks is an
// error, as an unknown namespace is for the real lookup.
type nsLabels map[string]map[string]string

func (n nsLabels) NamespaceLabels(_ context.Context, name string) (map[string]string, error) {
	l, ok := n[name]
	if !ok {
		return nil, errors.New("namespace " + name + " not found")
	}
	return l, nil
}

var testNamespaces = nsLabels{
	"meshed":       {LabelInject: LabelInjectEnabled},
	"plain":        {},
	"disabled":     {LabelInject: "disabled"},
	"kube-system":  {LabelInject: LabelInjectEnabled},
	"sigil-system": {LabelInject: LabelInjectEnabled},
}

func newTestInjector(t testing.TB) *Injector {
	t.Helper()
	inj, err := New(Config{Image: "registry.test/sigil:dev", MeshNamespace: "sigil-system"}, testNamespaces, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return inj
}

type podOpt func(*corev1.Pod)

func newPod(ns string, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: ns, Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web:1", Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}}},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func podLabel(k, v string) podOpt { return func(p *corev1.Pod) { p.Labels[k] = v } }
func annotation(k, v string) podOpt {
	return func(p *corev1.Pod) {
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations[k] = v
	}
}
func hostNetwork(p *corev1.Pod) { p.Spec.HostNetwork = true }
func initContainers(names ...string) podOpt {
	return func(p *corev1.Pod) {
		for _, n := range names {
			p.Spec.InitContainers = append(p.Spec.InitContainers, corev1.Container{Name: n, Image: n})
		}
	}
}
func podVolume(name string) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	}
}

// request wraps pod in a CREATE admission request.
func request(t testing.TB, pod *corev1.Pod) *admissionv1.AdmissionRequest {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	return &admissionv1.AdmissionRequest{
		UID: types.UID("uid-1"), Kind: podKind,
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: pod.Namespace, Name: pod.Name, Operation: admissionv1.Create,
		Object: runtime.RawExtension{Raw: raw},
	}
}

// applyPatch applies resp's JSON Patch to pod with evanphx/json-patch (the
// library the API server applies webhook patches with) and returns the
// result.
func applyPatch(t testing.TB, pod *corev1.Pod, resp *admissionv1.AdmissionResponse) *corev1.Pod {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	p, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatalf("patch does not decode: %v\n%s", err, resp.Patch)
	}
	out, err := p.Apply(raw)
	if err != nil {
		t.Fatalf("patch does not apply: %v\n%s", err, resp.Patch)
	}
	var got corev1.Pod
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	return &got
}

func names(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

// TestInjectionRules: each rule that decides whether a Pod gets the
// sidecar, and the refusals that fail the admission closed.
func TestInjectionRules(t *testing.T) {
	inj := newTestInjector(t)
	for _, tc := range []struct {
		name    string
		pod     *corev1.Pod
		inject  bool
		refused string // "" when allowed
	}{
		{"namespace opted in", newPod("meshed"), true, ""},
		{"pod opted in", newPod("plain", podLabel(LabelInject, LabelInjectEnabled)), true, ""},
		{"not opted in", newPod("plain"), false, ""},
		{"namespace label other value", newPod("disabled"), false, ""},
		{"pod label other value", newPod("plain", podLabel(LabelInject, "true")), false, ""},
		{"opted out by annotation", newPod("meshed", annotation(AnnotationInject, "false")), false, ""},
		{"opted out over pod label", newPod("plain", podLabel(LabelInject, LabelInjectEnabled), annotation(AnnotationInject, "false")), false, ""},
		{"annotation true leaves labels to decide", newPod("plain", annotation(AnnotationInject, "true")), false, ""},
		{"annotation true in opted-in namespace", newPod("meshed", annotation(AnnotationInject, "true")), true, ""},
		{"annotation malformed", newPod("meshed", annotation(AnnotationInject, "no")), false, `annotation sigil.dev/inject: "no"`},
		{"host network", newPod("meshed", hostNetwork), false, ""},
		{"kube-system never", newPod("kube-system", podLabel(LabelInject, LabelInjectEnabled)), false, ""},
		{"mesh namespace never", newPod("sigil-system"), false, ""},
		{"already injected", newPod("meshed", initContainers(InitContainer, ProxyContainer)), false, ""},
		{"sidecar as app container", newPod("meshed", func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: ProxyContainer})
		}), false, ""},
		{"unknown namespace fails closed", newPod("gone"), false, "labels of namespace gone"},
		{"no service name", newPod("meshed", func(p *corev1.Pod) { delete(p.Labels, "app") }), false, "no service name"},
		{"service from app.kubernetes.io/name", newPod("meshed", func(p *corev1.Pod) { delete(p.Labels, "app"); p.Labels["app.kubernetes.io/name"] = "api" }), true, ""},
		{"invalid service name", newPod("meshed", podLabel("app", "Web_1")), false, `label app: service name "Web_1"`},
		{"invalid service annotation", newPod("meshed", annotation(AnnotationService, "a.b")), false, "annotation sigil.dev/service"},
		{"app port annotation not a port", newPod("meshed", annotation(AnnotationAppPort, "http")), false, "annotation sigil.dev/app-port"},
		{"app port is the sidecar's", newPod("meshed", annotation(AnnotationAppPort, "15006")), false, "the sidecar's own"},
		{"init container name taken", newPod("meshed", initContainers(InitContainer)), false, "container named sigil-iptables"},
		{"volume name taken", newPod("meshed", podVolume(SocketVolume)), false, "volume named sigil-agent-socket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := inj.review(context.Background(), request(t, tc.pod))
			if resp.UID != "uid-1" {
				t.Fatalf("uid %q not echoed", resp.UID)
			}
			if tc.refused != "" {
				if resp.Allowed || resp.Result == nil || !strings.Contains(resp.Result.Message, tc.refused) {
					t.Fatalf("want refusal %q, got allowed=%v result=%+v", tc.refused, resp.Allowed, resp.Result)
				}
				return
			}
			if !resp.Allowed {
				t.Fatalf("refused: %+v", resp.Result)
			}
			if got := resp.Patch != nil; got != tc.inject {
				t.Fatalf("injected = %v, want %v (patch %s)", got, tc.inject, resp.Patch)
			}
		})
	}
}

// TestInjectionPatchApplies: the patch applies to the Pod as the API
// server applies it, puts the redirect step and the native sidecar first
// with the Pod's own init containers after them in their order, and a
// second admission of the result (re-invocation, or a Pod made from an
// injected Pod's spec) changes nothing.
func TestInjectionPatchApplies(t *testing.T) {
	inj := newTestInjector(t)
	for _, tc := range []struct {
		name      string
		pod       *corev1.Pod
		wantInits []string
		wantVols  []string
		wantArgs  []string
	}{
		{"bare pod", newPod("meshed"), []string{InitContainer, ProxyContainer}, []string{SocketVolume, TmpVolume},
			[]string{"--service", "web", "--namespace", "meshed", "--app", "127.0.0.1:8080"}},
		{"own init containers kept in order", newPod("meshed", initContainers("migrate", "seed"), podVolume("data"), annotation("team", "a/b")),
			[]string{InitContainer, ProxyContainer, "migrate", "seed"}, []string{"data", SocketVolume, TmpVolume}, nil},
		{"service and port annotations", newPod("meshed", annotation(AnnotationService, "api"), annotation(AnnotationAppPort, "9090")),
			[]string{InitContainer, ProxyContainer}, []string{SocketVolume, TmpVolume}, []string{"--service", "api", "--app", "127.0.0.1:9090"}},
		{"no port: outbound only", newPod("meshed", func(p *corev1.Pod) { p.Spec.Containers[0].Ports = nil }),
			[]string{InitContainer, ProxyContainer}, []string{SocketVolume, TmpVolume}, []string{"--app", "127.0.0.1:0"}},
		{"udp port skipped", newPod("meshed", func(p *corev1.Pod) {
			p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 53, Protocol: corev1.ProtocolUDP}, {ContainerPort: 8443}}
		}), []string{InitContainer, ProxyContainer}, []string{SocketVolume, TmpVolume}, []string{"--app", "127.0.0.1:8443"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := inj.review(context.Background(), request(t, tc.pod))
			if !resp.Allowed || resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
				t.Fatalf("no JSON patch: %+v", resp)
			}
			got := applyPatch(t, tc.pod, resp)
			if n := names(got.Spec.InitContainers); !slices.Equal(n, tc.wantInits) {
				t.Fatalf("init containers %v, want %v", n, tc.wantInits)
			}
			var vols []string
			for _, v := range got.Spec.Volumes {
				vols = append(vols, v.Name)
			}
			if !slices.Equal(vols, tc.wantVols) {
				t.Fatalf("volumes %v, want %v", vols, tc.wantVols)
			}
			if !slices.Equal(names(got.Spec.Containers), names(tc.pod.Spec.Containers)) {
				t.Fatalf("app containers changed: %v", names(got.Spec.Containers))
			}
			for k, v := range tc.pod.Annotations {
				if got.Annotations[k] != v {
					t.Fatalf("annotation %s lost", k)
				}
			}
			var st Status
			if err := json.Unmarshal([]byte(got.Annotations[AnnotationStatus]), &st); err != nil || st.Version != statusVersion || !slices.Equal(st.InitContainers, []string{InitContainer, ProxyContainer}) {
				t.Fatalf("status annotation %q: %v", got.Annotations[AnnotationStatus], err)
			}

			ipt, proxy := got.Spec.InitContainers[0], got.Spec.InitContainers[1]
			if proxy.RestartPolicy == nil || *proxy.RestartPolicy != corev1.ContainerRestartPolicyAlways {
				t.Fatal("sidecar is not a native sidecar (restartPolicy Always)")
			}
			if sp := proxy.StartupProbe; sp == nil || sp.Exec == nil || !slices.Equal(sp.Exec.Command, []string{"sigil-proxy", "ready"}) {
				t.Fatalf("startup probe %+v", proxy.StartupProbe)
			}
			if ipt.RestartPolicy != nil {
				t.Fatal("the iptables step must run once")
			}
			if sc := ipt.SecurityContext; *sc.RunAsUser != 0 || !slices.Equal(sc.Capabilities.Add, []corev1.Capability{"NET_ADMIN", "NET_RAW"}) || *sc.AllowPrivilegeEscalation {
				t.Fatalf("iptables security context %+v", sc)
			}
			if !slices.Equal(ipt.Args, []string{"iptables", "--proxy-uid", "1337", "--outbound-port", "15001"}) {
				t.Fatalf("iptables args %v", ipt.Args)
			}
			if sc := proxy.SecurityContext; *sc.RunAsUser != ProxyUID || !*sc.RunAsNonRoot || len(sc.Capabilities.Add) != 0 {
				t.Fatalf("sidecar security context %+v", sc)
			}
			if proxy.Resources.Requests.Cpu().String() != DefaultCPURequest || proxy.Resources.Requests.Memory().String() != DefaultMemoryRequest {
				t.Fatalf("requests %v", proxy.Resources.Requests)
			}
			args := strings.Join(proxy.Args, " ")
			for i := 0; i+1 < len(tc.wantArgs); i += 2 {
				if !strings.Contains(args, tc.wantArgs[i]+" "+tc.wantArgs[i+1]) {
					t.Fatalf("sidecar args %q lack %s %s", args, tc.wantArgs[i], tc.wantArgs[i+1])
				}
			}

			again := inj.review(context.Background(), request(t, got))
			if !again.Allowed || again.Patch != nil {
				t.Fatalf("second admission changed the pod: %s", again.Patch)
			}
		})
	}
}

// TestInjectionRequestShape: what is not a Pod creation is refused or let
// through unchanged, never injected.
func TestInjectionRequestShape(t *testing.T) {
	inj := newTestInjector(t)
	base := func() *admissionv1.AdmissionRequest { return request(t, newPod("meshed")) }
	for _, tc := range []struct {
		name    string
		mod     func(*admissionv1.AdmissionRequest)
		allowed bool
		refused string
	}{
		{"update passes unchanged", func(r *admissionv1.AdmissionRequest) { r.Operation = admissionv1.Update }, true, ""},
		{"not a pod", func(r *admissionv1.AdmissionRequest) {
			r.Kind = metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}
		}, false, "mutates pods only"},
		{"subresource", func(r *admissionv1.AdmissionRequest) { r.SubResource = "status" }, false, "mutates pods only"},
		{"no object", func(r *admissionv1.AdmissionRequest) { r.Object.Raw = nil }, false, "no object"},
		{"object not json", func(r *admissionv1.AdmissionRequest) { r.Object.Raw = []byte("{") }, false, "inject: pod"},
		{"object duplicate field", func(r *admissionv1.AdmissionRequest) {
			r.Object.Raw = []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","name":"b"}}`)
		}, false, "duplicate field"},
		{"object of another kind", func(r *admissionv1.AdmissionRequest) { r.Object.Raw = []byte(`{"apiVersion":"v1","kind":"Secret"}`) }, false, "want v1 Pod"},
		{"no namespace", func(r *admissionv1.AdmissionRequest) {
			r.Namespace = ""
			r.Object.Raw = []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"}}`)
		}, false, "no namespace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := base()
			tc.mod(r)
			resp := inj.review(context.Background(), r)
			if resp.Allowed != tc.allowed || resp.Patch != nil {
				t.Fatalf("allowed=%v patch=%s, want allowed=%v and no patch", resp.Allowed, resp.Patch, tc.allowed)
			}
			if tc.refused != "" && (resp.Result == nil || !strings.Contains(resp.Result.Message, tc.refused)) {
				t.Fatalf("result %+v, want %q", resp.Result, tc.refused)
			}
		})
	}
}

// TestInjectionConfigRefused: bad settings stop the server at start.
func TestInjectionConfigRefused(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{CPURequest: "lots", MeshNamespace: "sigil-system"}, "--inject-proxy-cpu"},
		{Config{MemoryRequest: "-1Mi", MeshNamespace: "sigil-system"}, "--inject-proxy-memory"},
		{Config{MeshNamespace: "Sigil"}, "mesh namespace"},
	} {
		if _, err := New(tc.cfg, testNamespaces, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err %v, want %q", tc.cfg, err, tc.want)
		}
	}
	if _, err := New(Config{MeshNamespace: "sigil-system"}, nil, slog.New(slog.DiscardHandler)); err == nil {
		t.Error("no namespace lookup accepted")
	}
}
