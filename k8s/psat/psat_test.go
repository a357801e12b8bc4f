package psat_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/sigil-mesh/sigil/k8s/psat"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

const (
	goodToken = "good-token"
	podUID    = "3f1c2a44-0000-4000-8000-000000000001"
)

// agentUser is the review's user of the agent's bound token.
func agentUser() authv1.UserInfo {
	return authv1.UserInfo{
		Username: "system:serviceaccount:sigil-system:sigil-agent",
		UID:      "sa-uid",
		Extra: map[string]authv1.ExtraValue{
			"authentication.kubernetes.io/pod-name": {"sigil-agent-x7k2p"},
			"authentication.kubernetes.io/pod-uid":  {podUID},
		},
	}
}

// agentPod is the agent's pod on node-a.
func agentPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "sigil-system", Name: "sigil-agent-x7k2p", UID: podUID},
		Spec:       corev1.PodSpec{NodeName: "node-a", ServiceAccountName: "sigil-agent"},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
}

// reviewer answers TokenReviews for goodToken with status (audience
// sigil-server) and refuses every other token as kube-apiserver does.
func reviewer(status authv1.TokenReviewStatus) k8stesting.ReactionFunc {
	return func(action k8stesting.Action) (bool, runtime.Object, error) {
		r := action.(k8stesting.CreateAction).GetObject().(*authv1.TokenReview).DeepCopy()
		if r.Spec.Token != goodToken {
			r.Status = authv1.TokenReviewStatus{Error: "invalid bearer token"}
			return true, r, nil
		}
		r.Status = status
		return true, r, nil
	}
}

func authenticated(user authv1.UserInfo) authv1.TokenReviewStatus {
	return authv1.TokenReviewStatus{Authenticated: true, User: user, Audiences: []string{"sigil-server"}}
}

// TestPSATAttestationRefusesWhatDoesNotProveANode walks the checks in
// order: each case breaks one, and the refusal names it.
func TestPSATAttestationRefusesWhatDoesNotProveANode(t *testing.T) {
	noPodUser := agentUser()
	noPodUser.Extra = nil
	twoPods := agentUser()
	twoPods.Extra["authentication.kubernetes.io/pod-name"] = authv1.ExtraValue{"a", "b"}
	otherSA := agentUser()
	otherSA.Username = "system:serviceaccount:default:default"
	notSA := agentUser()
	notSA.Username = "kubernetes-admin"

	tests := []struct {
		name     string
		token    string
		status   authv1.TokenReviewStatus
		pod      func(*corev1.Pod) // nil: the pod does not exist
		review   error             // the TokenReview call's error
		getPod   error             // the pod GET's error
		wantErr  error
		wantText string
		wantNode string
	}{
		{name: "valid bound token of the agent", token: goodToken, status: authenticated(agentUser()), pod: func(*corev1.Pod) {}, wantNode: "node-a"},
		{name: "empty token", token: "", wantErr: psat.ErrRefused, wantText: "empty token"},
		{name: "oversized token", token: strings.Repeat("x", psat.MaxTokenBytes+1), wantErr: psat.ErrRefused, wantText: "more than"},
		{name: "token refused by the api server", token: "forged", status: authenticated(agentUser()), wantErr: psat.ErrRefused, wantText: "not authenticated: invalid bearer token"},
		{name: "not authenticated, wrong audience", token: goodToken, status: authv1.TokenReviewStatus{Error: "token audiences [\"vault\"] is invalid for the target audiences [\"sigil-server\"]"}, wantErr: psat.ErrRefused, wantText: "is invalid for the target audiences"},
		{name: "authenticated for another audience only", token: goodToken, status: authv1.TokenReviewStatus{Authenticated: true, User: agentUser(), Audiences: []string{"vault"}}, wantErr: psat.ErrRefused, wantText: "not for audience sigil-server"},
		{name: "authenticated with no audiences", token: goodToken, status: authv1.TokenReviewStatus{Authenticated: true, User: agentUser()}, wantErr: psat.ErrRefused, wantText: "not for audience sigil-server"},
		{name: "user not a service account", token: goodToken, status: authenticated(notSA), wantErr: psat.ErrRefused, wantText: "is not a service account"},
		{name: "service account not allowed", token: goodToken, status: authenticated(otherSA), wantErr: psat.ErrRefused, wantText: "default:default is not allowed"},
		{name: "token bound to no pod", token: goodToken, status: authenticated(noPodUser), wantErr: psat.ErrRefused, wantText: "not bound to a pod"},
		{name: "two pod names", token: goodToken, status: authenticated(twoPods), wantErr: psat.ErrRefused, wantText: "not bound to a pod"},
		{name: "pod gone", token: goodToken, status: authenticated(agentUser()), wantErr: psat.ErrRefused, wantText: "does not exist"},
		{name: "pod uid mismatch (re-created under the name)", token: goodToken, status: authenticated(agentUser()), pod: func(p *corev1.Pod) { p.UID = "other-uid" }, wantErr: psat.ErrRefused, wantText: "has uid other-uid"},
		{name: "pod on no node", token: goodToken, status: authenticated(agentUser()), pod: func(p *corev1.Pod) { p.Spec.NodeName = "" }, wantErr: psat.ErrRefused, wantText: "not scheduled to a node"},
		{name: "pod succeeded", token: goodToken, status: authenticated(agentUser()), pod: func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }, wantErr: psat.ErrRefused, wantText: "has terminated"},
		{name: "pod failed", token: goodToken, status: authenticated(agentUser()), pod: func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }, wantErr: psat.ErrRefused, wantText: "has terminated"},
		{name: "pod being deleted", token: goodToken, status: authenticated(agentUser()), pod: func(p *corev1.Pod) { now := metav1.Now(); p.DeletionTimestamp = &now }, wantErr: psat.ErrRefused, wantText: "being deleted"},
		{name: "pod of another service account", token: goodToken, status: authenticated(agentUser()), pod: func(p *corev1.Pod) { p.Spec.ServiceAccountName = "default" }, wantErr: psat.ErrRefused, wantText: "runs as service account"},
		{name: "node name not a path segment", token: goodToken, status: authenticated(agentUser()), pod: func(p *corev1.Pod) { p.Spec.NodeName = ".." }, wantErr: psat.ErrRefused, wantText: "node name"},
		{name: "tokenreview api error", token: goodToken, review: errors.New("connection refused"), wantErr: psat.ErrUnavailable, wantText: "tokenreviews create: connection refused"},
		{name: "tokenreview forbidden (server's RBAC)", token: goodToken, review: apierrors.NewForbidden(schema.GroupResource{Group: "authentication.k8s.io", Resource: "tokenreviews"}, "", errors.New("no RBAC")), wantErr: psat.ErrUnavailable, wantText: "forbidden"},
		{name: "pod get api error", token: goodToken, status: authenticated(agentUser()), pod: func(*corev1.Pod) {}, getPod: apierrors.NewServiceUnavailable("etcd down"), wantErr: psat.ErrUnavailable, wantText: "pods get sigil-system/sigil-agent-x7k2p"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var objs []runtime.Object
			if tt.pod != nil {
				p := agentPod()
				tt.pod(p)
				objs = append(objs, p)
			}
			cs := fake.NewClientset(objs...)
			if tt.review != nil {
				cs.PrependReactor("create", "tokenreviews", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, tt.review })
			} else {
				cs.PrependReactor("create", "tokenreviews", reviewer(tt.status))
			}
			if tt.getPod != nil {
				cs.PrependReactor("get", "pods", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, tt.getPod })
			}
			a := psat.New(psat.NewClient(cs), psat.Config{})
			res, err := a.Attest(context.Background(), tt.token)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Attest: %v", err)
				}
				want := psat.Result{ServiceAccount: psat.DefaultServiceAccount, PodName: "sigil-agent-x7k2p", PodUID: podUID, Node: tt.wantNode}
				if res != want {
					t.Fatalf("Attest = %+v, want %+v", res, want)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Attest error = %v, want %v", err, tt.wantErr)
			}
			other := psat.ErrUnavailable
			if tt.wantErr == psat.ErrUnavailable {
				other = psat.ErrRefused
			}
			if errors.Is(err, other) {
				t.Fatalf("Attest error %v is both refused and unavailable", err)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Fatalf("Attest error = %q, want it to say %q", err, tt.wantText)
			}
			if res.Node != "" {
				t.Fatalf("refused attestation still names node %q", res.Node)
			}
		})
	}
}

// TestPSATAttestationAsksForTheAudience checks the review the API server
// receives: the token and the configured audience only.
func TestPSATAttestationAsksForTheAudience(t *testing.T) {
	cs := fake.NewClientset(agentPod())
	var got authv1.TokenReviewSpec
	cs.PrependReactor("create", "tokenreviews", func(action k8stesting.Action) (bool, runtime.Object, error) {
		got = action.(k8stesting.CreateAction).GetObject().(*authv1.TokenReview).Spec
		return reviewer(authenticated(agentUser()))(action)
	})
	if _, err := psat.New(psat.NewClient(cs), psat.Config{}).Attest(context.Background(), goodToken); err != nil {
		t.Fatal(err)
	}
	if got.Token != goodToken || len(got.Audiences) != 1 || got.Audiences[0] != "sigil-server" {
		t.Fatalf("token review spec = %+v, want the token and audiences [sigil-server]", got)
	}
}

// TestPSATAllowedServiceAccounts: a configured list replaces the default.
func TestPSATAllowedServiceAccounts(t *testing.T) {
	user := agentUser()
	user.Username = "system:serviceaccount:mesh:node-agent"
	pod := agentPod()
	pod.Namespace, pod.Spec.ServiceAccountName = "mesh", "node-agent"
	tests := []struct {
		name    string
		allowed []psat.ServiceAccount
		user    authv1.UserInfo
		wantErr bool
	}{
		{name: "listed", allowed: []psat.ServiceAccount{{Namespace: "mesh", Name: "node-agent"}}, user: user},
		{name: "default no longer allowed once a list is given", allowed: []psat.ServiceAccount{{Namespace: "mesh", Name: "node-agent"}}, user: agentUser(), wantErr: true},
		{name: "same name in another namespace", allowed: []psat.ServiceAccount{{Namespace: "other", Name: "node-agent"}}, user: user, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := fake.NewClientset(pod, agentPod())
			cs.PrependReactor("create", "tokenreviews", reviewer(authenticated(tt.user)))
			_, err := psat.New(psat.NewClient(cs), psat.Config{Allowed: tt.allowed}).Attest(context.Background(), goodToken)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Attest error = %v, want error %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, psat.ErrRefused) {
				t.Fatalf("Attest error = %v, want ErrRefused", err)
			}
		})
	}
}

func TestParseServiceAccount(t *testing.T) {
	tests := []struct {
		in   string
		want psat.ServiceAccount
		err  string
	}{
		{in: "sigil-system:sigil-agent", want: psat.DefaultServiceAccount},
		{in: "ns:a.b", want: psat.ServiceAccount{Namespace: "ns", Name: "a.b"}},
		{in: "sigil-agent", err: "want NAMESPACE:NAME"},
		{in: ":x", err: "not a Kubernetes namespace name"},
		{in: "Ns:x", err: "not a Kubernetes namespace name"},
		{in: "ns:", err: "not a Kubernetes service account name"},
		{in: "ns:a:b", err: "not a Kubernetes service account name"},
	}
	for _, tt := range tests {
		got, err := psat.ParseServiceAccount(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseServiceAccount(%q) error = %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseServiceAccount(%q) = %v, %v, want %v", tt.in, got, err, tt.want)
		}
		if got.String() != tt.in {
			t.Errorf("%v.String() = %q, want %q", got, got.String(), tt.in)
		}
	}
}

// blockingClient answers like the API server for the agent's pod, each
// review only once unblock is closed.
type blockingClient struct {
	entered chan struct{}
	unblock chan struct{}
}

func (b blockingClient) CreateTokenReview(_ context.Context, r *authv1.TokenReview) (*authv1.TokenReview, error) {
	b.entered <- struct{}{}
	<-b.unblock
	out := r.DeepCopy()
	out.Status = authenticated(agentUser())
	return out, nil
}

func (b blockingClient) GetPod(context.Context, string, string) (*corev1.Pod, error) {
	return agentPod(), nil
}

// TestPSATAttestationsInFlightAreBounded: past MaxInFlight attestations
// asking the API server, another waits, and fails as unavailable (never
// refused, never accepted) when its context ends first.
func TestPSATAttestationsInFlightAreBounded(t *testing.T) {
	c := blockingClient{entered: make(chan struct{}, psat.MaxInFlight+1), unblock: make(chan struct{})}
	a := psat.New(c, psat.Config{})
	done := make(chan error, psat.MaxInFlight)
	for range psat.MaxInFlight {
		go func() { _, err := a.Attest(context.Background(), goodToken); done <- err }()
	}
	for range psat.MaxInFlight {
		<-c.entered
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.Attest(ctx, goodToken); !errors.Is(err, psat.ErrUnavailable) || !strings.Contains(err.Error(), "MaxInFlight") {
		t.Fatalf("attestation past the bound: %v, want unavailable naming MaxInFlight", err)
	}
	close(c.unblock)
	for range psat.MaxInFlight {
		if err := <-done; err != nil {
			t.Fatalf("attestation within the bound: %v", err)
		}
	}
	if _, err := a.Attest(context.Background(), goodToken); err != nil {
		t.Fatalf("attestation after the others finished: %v", err)
	}
}
