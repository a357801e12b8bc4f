// Package psat attests a node by the projected service-account token of
// the agent's pod, as SPIRE's k8s_psat node attestor does: the token is
// checked by the API server itself (the TokenReview API, with the audience
// Sigil's server expects), its user must be a service account on an allow
// list, the token must be bound to a pod (the pod-name and pod-uid extras
// kube-apiserver adds for bound tokens), and that pod, read back from the
// API server, must be the same object (uid), still live and scheduled: its
// spec.nodeName is the node the agent is attested as.
//
// Usage:
//
//	a, err := psat.New(psat.NewClient(clientset), psat.Config{Allowed: sas})
//	res, err := a.Attest(ctx, token)
//	// errors.Is(err, psat.ErrRefused): the token proves nothing (PermissionDenied)
//	// errors.Is(err, psat.ErrUnavailable): the API server could not decide
//	// else res.Node is the node to issue naming.K8sPSATAgentID for.
//
// Tokens are not single use: kubelet refreshes the projected token and the
// agent re-reads it, so a node re-attests with whatever token is current.
package psat

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sigil-mesh/sigil/naming"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Audience is the audience an agent's projected token must be issued for
// (the DaemonSet's serviceAccountToken projection, audience sigil-server).
const Audience = "sigil-server"

// MaxTokenBytes bounds a token sent for review: a service-account JWT is
// one to two kilobytes; anything much larger is not one.
const MaxTokenBytes = 16 << 10

// MaxInFlight bounds the attestations that ask the API server at once.
// Attest is open to any peer before it has an identity, so without a
// bound a flood of tokens would be a flood of TokenReviews; past it a
// call waits for a slot until its context ends or MaxQueueWait passes,
// then fails as unavailable.
const (
	MaxInFlight  = 32
	MaxQueueWait = 10 * time.Second
)

// The user extras kube-apiserver sets on a token bound to a pod
// (k8s.io/apiserver/pkg/authentication/serviceaccount: PodNameKey,
// PodUIDKey).
const (
	extraPodName = "authentication.kubernetes.io/pod-name"
	extraPodUID  = "authentication.kubernetes.io/pod-uid"
)

// serviceAccountPrefix starts the user name of a service account,
// system:serviceaccount:<namespace>:<name>.
const serviceAccountPrefix = "system:serviceaccount:"

// Sentinel errors of Attest: every error wraps exactly one of them.
var (
	// ErrRefused: the token does not prove an allowed agent pod on a node
	// (the caller answers PermissionDenied).
	ErrRefused = errors.New("psat: refused")
	// ErrUnavailable: the API server could not be asked or did not answer
	// (the caller answers Unavailable; nothing is accepted).
	ErrUnavailable = errors.New("psat: kubernetes api unavailable")
)

// Client is the two API calls attestation makes. NewClient makes one over
// a clientset; tests pass client-go's fake clientset to it.
type Client interface {
	// CreateTokenReview asks the API server to authenticate a token.
	CreateTokenReview(ctx context.Context, review *authv1.TokenReview) (*authv1.TokenReview, error)
	// GetPod reads a pod.
	GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error)
}

// NewClient returns the Client over a clientset.
func NewClient(cs kubernetes.Interface) Client { return clientset{cs} }

type clientset struct{ cs kubernetes.Interface }

func (c clientset) CreateTokenReview(ctx context.Context, r *authv1.TokenReview) (*authv1.TokenReview, error) {
	return c.cs.AuthenticationV1().TokenReviews().Create(ctx, r, metav1.CreateOptions{})
}

func (c clientset) GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	return c.cs.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
}

// ServiceAccount names a Kubernetes service account.
type ServiceAccount struct {
	Namespace string
	Name      string
}

// String is NS:NAME, the form of --k8s-psat-allowed-sa.
func (sa ServiceAccount) String() string { return sa.Namespace + ":" + sa.Name }

// DefaultServiceAccount is the agent DaemonSet's service account, the one
// allowed when none is configured.
var DefaultServiceAccount = ServiceAccount{Namespace: "sigil-system", Name: "sigil-agent"}

// ParseServiceAccount parses NS:NAME (--k8s-psat-allowed-sa): a namespace
// (an RFC 1123 label) and a service-account name (an RFC 1123 subdomain),
// as Kubernetes names them.
func ParseServiceAccount(s string) (ServiceAccount, error) {
	ns, name, ok := strings.Cut(s, ":")
	if !ok {
		return ServiceAccount{}, fmt.Errorf("psat: service account %s: want NAMESPACE:NAME", naming.Quote(s))
	}
	if !naming.ValidNamespace(ns) {
		return ServiceAccount{}, fmt.Errorf("psat: service account %s: namespace %s is not a Kubernetes namespace name", naming.Quote(s), naming.Quote(ns))
	}
	if !naming.ValidName(name) {
		return ServiceAccount{}, fmt.Errorf("psat: service account %s: %s is not a Kubernetes service account name", naming.Quote(s), naming.Quote(name))
	}
	return ServiceAccount{Namespace: ns, Name: name}, nil
}

// Config is what an Attestor accepts.
type Config struct {
	// Allowed are the service accounts whose tokens attest a node; empty
	// means DefaultServiceAccount only.
	Allowed []ServiceAccount
	// Audience is the audience tokens must carry; "" means Audience.
	Audience string
}

// Attestor checks projected service-account tokens.
type Attestor struct {
	client   Client
	allowed  []ServiceAccount
	audience string
	slots    chan struct{} // MaxInFlight of them
}

// New returns an Attestor asking client.
func New(client Client, cfg Config) *Attestor {
	a := &Attestor{client: client, allowed: cfg.Allowed, audience: cfg.Audience, slots: make(chan struct{}, MaxInFlight)}
	if len(a.allowed) == 0 {
		a.allowed = []ServiceAccount{DefaultServiceAccount}
	}
	if a.audience == "" {
		a.audience = Audience
	}
	return a
}

// Result is what an attestation established. On a refusal the fields
// known by then are set, for the audit record.
type Result struct {
	// ServiceAccount is the token's service account.
	ServiceAccount ServiceAccount
	// PodName and PodUID are the pod the token is bound to (in the
	// service account's namespace).
	PodName string
	PodUID  string
	// Node is the pod's spec.nodeName: the node the agent is attested as.
	Node string
}

// Attest checks token (see the package doc). The error wraps ErrRefused
// or ErrUnavailable and says what was wrong.
func (a *Attestor) Attest(ctx context.Context, token string) (Result, error) {
	var res Result
	if token == "" {
		return res, fmt.Errorf("%w: empty token", ErrRefused)
	}
	if len(token) > MaxTokenBytes {
		return res, fmt.Errorf("%w: token of %d bytes, more than %d", ErrRefused, len(token), MaxTokenBytes)
	}
	release, err := a.acquire(ctx)
	if err != nil {
		return res, err
	}
	defer release()
	user, err := a.review(ctx, token)
	if err != nil {
		return res, err
	}
	res.ServiceAccount, err = serviceAccountOf(user.Username)
	if err != nil {
		return res, err
	}
	if !slices.Contains(a.allowed, res.ServiceAccount) {
		return res, fmt.Errorf("%w: service account %s is not allowed to attest nodes (--k8s-psat-allowed-sa)", ErrRefused, res.ServiceAccount)
	}
	res.PodName, res.PodUID, err = podOf(user)
	if err != nil {
		return res, err
	}
	res.Node, err = a.podNode(ctx, res)
	return res, err
}

// acquire takes one of the MaxInFlight slots, waiting at most
// MaxQueueWait.
func (a *Attestor) acquire(ctx context.Context) (func(), error) {
	ctx, cancel := context.WithTimeout(ctx, MaxQueueWait)
	defer cancel()
	select {
	case a.slots <- struct{}{}:
		return func() { <-a.slots }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %d attestations already asking the API server (psat.MaxInFlight): %w", ErrUnavailable, MaxInFlight, ctx.Err())
	}
}

// review asks the API server to authenticate token for the audience and
// returns its user.
func (a *Attestor) review(ctx context.Context, token string) (authv1.UserInfo, error) {
	out, err := a.client.CreateTokenReview(ctx, &authv1.TokenReview{Spec: authv1.TokenReviewSpec{Token: token, Audiences: []string{a.audience}}})
	if err != nil {
		return authv1.UserInfo{}, fmt.Errorf("%w: tokenreviews create: %w", ErrUnavailable, err)
	}
	st := out.Status
	if !st.Authenticated {
		why := "not authenticated"
		if st.Error != "" {
			why += ": " + st.Error
		}
		return authv1.UserInfo{}, fmt.Errorf("%w: token review: %s (a projected service-account token of audience %s is needed)", ErrRefused, why, a.audience)
	}
	// kube-apiserver answers with the audiences of the request the token
	// is valid for; an answer without ours (an authenticator that ignores
	// spec.audiences) does not prove the token was meant for this server.
	if !slices.Contains(st.Audiences, a.audience) {
		return authv1.UserInfo{}, fmt.Errorf("%w: token review: token is not for audience %s (review answered audiences %q)", ErrRefused, a.audience, st.Audiences)
	}
	return st.User, nil
}

// serviceAccountOf parses a service account's user name,
// system:serviceaccount:<namespace>:<name>.
func serviceAccountOf(username string) (ServiceAccount, error) {
	rest, ok := strings.CutPrefix(username, serviceAccountPrefix)
	if !ok {
		return ServiceAccount{}, fmt.Errorf("%w: token's user %s is not a service account", ErrRefused, naming.Quote(username))
	}
	sa, err := ParseServiceAccount(rest)
	if err != nil {
		return ServiceAccount{}, fmt.Errorf("%w: token's user %s: %w", ErrRefused, naming.Quote(username), err)
	}
	return sa, nil
}

// podOf returns the pod a token is bound to, from the user's extras.
func podOf(user authv1.UserInfo) (name, uid string, err error) {
	one := func(key string) (string, bool) {
		v := user.Extra[key]
		if len(v) != 1 || v[0] == "" {
			return "", false
		}
		return v[0], true
	}
	name, okName := one(extraPodName)
	uid, okUID := one(extraPodUID)
	if !okName || !okUID {
		return "", "", fmt.Errorf("%w: token is not bound to a pod (no %s and %s in the review's user extra): use a projected serviceAccountToken volume, not a Secret or a TokenRequest without a bound pod", ErrRefused, extraPodName, extraPodUID)
	}
	if !naming.ValidName(name) {
		return "", "", fmt.Errorf("%w: token's pod name %s is not a Kubernetes name", ErrRefused, naming.Quote(name))
	}
	return name, uid, nil
}

// podNode reads the token's pod back and returns the node it runs on: the
// same object (the uid, so a pod deleted and re-created under the name is
// not it), not finished or being deleted, and scheduled.
func (a *Attestor) podNode(ctx context.Context, res Result) (string, error) {
	ns := res.ServiceAccount.Namespace
	pod, err := a.client.GetPod(ctx, ns, res.PodName)
	if apierrors.IsNotFound(err) {
		return "", fmt.Errorf("%w: the token's pod %s/%s does not exist", ErrRefused, ns, res.PodName)
	}
	if err != nil {
		return "", fmt.Errorf("%w: pods get %s/%s: %w", ErrUnavailable, ns, res.PodName, err)
	}
	switch {
	case string(pod.UID) != res.PodUID:
		return "", fmt.Errorf("%w: pod %s/%s has uid %s, the token was issued for uid %s", ErrRefused, ns, res.PodName, pod.UID, res.PodUID)
	case pod.DeletionTimestamp != nil:
		return "", fmt.Errorf("%w: pod %s/%s is being deleted", ErrRefused, ns, res.PodName)
	case pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
		return "", fmt.Errorf("%w: pod %s/%s has terminated (phase %s)", ErrRefused, ns, res.PodName, pod.Status.Phase)
	case pod.Spec.ServiceAccountName != res.ServiceAccount.Name:
		return "", fmt.Errorf("%w: pod %s/%s runs as service account %s, not the token's %s", ErrRefused, ns, res.PodName, naming.Quote(pod.Spec.ServiceAccountName), res.ServiceAccount.Name)
	case pod.Spec.NodeName == "":
		return "", fmt.Errorf("%w: pod %s/%s is not scheduled to a node (spec.nodeName is empty)", ErrRefused, ns, res.PodName)
	}
	if err := naming.ValidateNodeName(pod.Spec.NodeName); err != nil {
		return "", fmt.Errorf("%w: pod %s/%s: %w", ErrRefused, ns, res.PodName, err)
	}
	return pod.Spec.NodeName, nil
}
