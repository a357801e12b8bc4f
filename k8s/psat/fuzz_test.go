package psat_test

import (
	"context"
	"testing"

	"github.com/sigil-mesh/sigil/k8s/psat"
	"github.com/sigil-mesh/sigil/naming"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// FuzzParseServiceAccount: --k8s-psat-allowed-sa never panics, and what
// it accepts prints back to itself.
func FuzzParseServiceAccount(f *testing.F) {
	for _, s := range []string{"sigil-system:sigil-agent", "ns:a.b", ":", "a:b:c", "Ns:x", "ns:" + string(make([]byte, 300))} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sa, err := psat.ParseServiceAccount(s)
		if err != nil {
			return
		}
		if sa.String() != s {
			t.Fatalf("ParseServiceAccount(%q) = %v, prints %q", s, sa, sa.String())
		}
	})
}

// answers is a Client that answers one review and one pod, for fuzzing
// what the API server's answer may hold.
type answers struct {
	user authv1.UserInfo
	pod  *corev1.Pod
}

func (a answers) CreateTokenReview(_ context.Context, r *authv1.TokenReview) (*authv1.TokenReview, error) {
	out := r.DeepCopy()
	out.Status = authv1.TokenReviewStatus{Authenticated: true, User: a.user, Audiences: r.Spec.Audiences}
	return out, nil
}

func (a answers) GetPod(context.Context, string, string) (*corev1.Pod, error) { return a.pod, nil }

// FuzzAttestReviewAnswer: whatever user name, pod extras and node the
// API server answers, Attest never panics, and it accepts only the
// allowed service account's pod, by uid, with a node name that is a
// SPIFFE ID path segment.
func FuzzAttestReviewAnswer(f *testing.F) {
	f.Add("system:serviceaccount:sigil-system:sigil-agent", "sigil-agent-1", "uid-1", "uid-1", "node-a")
	f.Add("system:serviceaccount:sigil-system:sigil-agent:x", "p", "u", "u", "n")
	f.Add("system:serviceaccount::", "", "", "", "")
	f.Add("system:serviceaccount:sigil-system:sigil-agent", "../x", "u", "u", "node/a")
	f.Fuzz(func(t *testing.T, user, podName, tokenUID, podUID, node string) {
		c := answers{
			user: authv1.UserInfo{Username: user, Extra: map[string]authv1.ExtraValue{
				"authentication.kubernetes.io/pod-name": {podName},
				"authentication.kubernetes.io/pod-uid":  {tokenUID},
			}},
			pod: &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: "sigil-system", Name: podName, UID: types.UID(podUID)},
				Spec:       corev1.PodSpec{NodeName: node, ServiceAccountName: "sigil-agent"},
			},
		}
		res, err := psat.New(c, psat.Config{}).Attest(context.Background(), "token")
		if err != nil {
			return
		}
		if user != "system:serviceaccount:sigil-system:sigil-agent" || tokenUID != podUID || res.Node != node {
			t.Fatalf("accepted user %q, token uid %q, pod uid %q as %+v", user, tokenUID, podUID, res)
		}
		if err := naming.ValidateNodeName(res.Node); err != nil {
			t.Fatalf("accepted node %q: %v", res.Node, err)
		}
	})
}
