package server

// Node attestation by projected service-account token (SPIRE's k8s_psat)
// with --kubernetes: the agent sends the token kubelet projects into its
// pod (audience sigil-server); package k8s/psat checks it with the
// TokenReview API and reads the pod back for its node; the agent gets
// spiffe://<td>/sigil/agent/k8s_psat/<cluster>/<node>. Tokens are not
// single use, so an agent whose SVID expired, or that was evicted,
// attests again with its current token.
//
// The server's service account needs, cluster-wide: tokenreviews create
// (authentication.k8s.io) and pods get (core).

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/audit"
	"github.com/sigil-mesh/sigil/ca"
	"github.com/sigil-mesh/sigil/k8s/psat"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/server/registry"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// checkPSAT parses --k8s-psat-allowed-sa (default the agents' service
// account in k.Namespace, NAMESPACE:sigil-agent) into k.psatAllowed.
func (k *KubeConfig) checkPSAT() []error {
	var errs []error
	k.psatAllowed = nil
	for _, s := range k.PSATAllowedSAs {
		sa, err := psat.ParseServiceAccount(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("--k8s-psat-allowed-sa: %w", err))
			continue
		}
		k.psatAllowed = append(k.psatAllowed, sa)
	}
	if len(k.PSATAllowedSAs) == 0 {
		// The agents' service account is in Sigil's namespace, as
		// sigil install --namespace puts it.
		k.psatAllowed = []psat.ServiceAccount{{Namespace: k.Namespace, Name: psat.DefaultServiceAccount.Name}}
	}
	return errs
}

// psatPart is the Kubernetes part that attests nodes by projected token.
func (s *Server) psatPart() kubePart {
	return kubePart{name: "node attestation (k8s_psat)", start: s.startPSAT}
}

// startPSAT makes the attestor Attest uses. It warns, without failing,
// when the server's own RBAC lacks what attestation needs: every
// attestation would then fail closed (Unavailable) and say why.
func (s *Server) startPSAT(ctx context.Context, _ *sync.WaitGroup) error {
	k := s.cfg.Kubernetes
	s.psat.Store(psat.New(psat.NewClient(s.kube.Core), psat.Config{Allowed: k.psatAllowed}))
	for _, attr := range []authzv1.ResourceAttributes{
		{Group: "authentication.k8s.io", Resource: "tokenreviews", Verb: "create"},
		{Resource: "pods", Verb: "get"},
	} {
		review, err := s.kube.Core.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authzv1.SelfSubjectAccessReview{Spec: authzv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &attr}}, metav1.CreateOptions{})
		if err != nil {
			s.log.Warn("cannot check the server's RBAC for node attestation", "error", err)
			return nil
		}
		if !review.Status.Allowed {
			s.log.Warn("the server's service account may not do what node attestation needs; every k8s_psat attestation will fail until RBAC grants it", "permission", attr.Verb+" "+strings.TrimSuffix(attr.Resource+"."+attr.Group, "."))
		}
	}
	return nil
}

// attestPSAT is Attest with a projected service-account token.
func (s *Server) attestPSAT(ctx context.Context, req *agentv1.AttestRequest, now time.Time) (*agentv1.AttestResponse, error) {
	attestor := s.psat.Load()
	if attestor == nil {
		if !s.cfg.Kubernetes.Enabled {
			return nil, status.Error(codes.FailedPrecondition, "this server does not attest nodes by projected service-account token: it runs without --kubernetes")
		}
		return nil, status.Error(codes.Unavailable, "node attestation by projected token is starting")
	}
	pub, err := ca.ParseCSR(req.GetCsr())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	token := req.GetK8SPsatToken()
	res, err := attestor.Attest(ctx, token)
	details := map[string]string{"attestor": naming.AttestorK8sPSAT, "token_sha256": HashJoinToken(token)[:16]}
	if res.ServiceAccount != (psat.ServiceAccount{}) {
		details["sa"] = res.ServiceAccount.String()
	}
	if res.PodName != "" {
		details["pod"] = res.ServiceAccount.Namespace + "/" + res.PodName
		details["pod_uid"] = res.PodUID
	}
	if err != nil {
		if !errors.Is(err, psat.ErrRefused) {
			s.log.Warn("agent attestation failed: the kubernetes api could not decide", "attestor", naming.AttestorK8sPSAT, "error", err, "peer", peerAddr(ctx))
			return nil, status.Error(codes.Unavailable, err.Error())
		}
		return nil, s.refusePSAT(ctx, details, err.Error())
	}
	details["node"] = res.Node
	id, err := naming.K8sPSATAgentID(s.cfg.td, s.cfg.Kubernetes.Cluster, res.Node)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	agent := registry.Agent{SPIFFEID: id.String(), Attestor: naming.AttestorK8sPSAT, Node: res.Node, AttestedAt: now}
	// A banned agent is refused here, after the TokenReview: only that
	// names the node, hence the agent (k8s_evictions.go).
	svid, err := s.signAgent(ctx, agent, nil, pub, audit.Event{}, audit.AgentAttested, details)
	if status.Code(err) == codes.PermissionDenied {
		return nil, s.refusePSAT(ctx, details, status.Convert(err).Message())
	}
	if err != nil {
		return nil, err
	}
	s.seen.mark(id.String(), now)
	s.log.Info("agent attested", "agent_id", id.String(), "node", res.Node, "attestor", naming.AttestorK8sPSAT, "namespace", res.ServiceAccount.Namespace, "pod", res.PodName)
	return &agentv1.AttestResponse{Svid: svid, Bundle: s.bundleProto()}, nil
}

// refusePSAT records a refused k8s_psat attestation (audited
// agent.refused with reason, and logged) and returns its PermissionDenied
// error; Unavailable when the audit record cannot be written.
func (s *Server) refusePSAT(ctx context.Context, details map[string]string, reason string) error {
	details["reason"] = reason
	if aerr := s.audit.Append(audit.Event{Type: audit.AgentRefused, Actor: peerAddr(ctx), Details: details}); aerr != nil {
		return status.Error(codes.Unavailable, aerr.Error())
	}
	s.log.Warn("agent attestation refused", "attestor", naming.AttestorK8sPSAT, "reason", reason, "peer", peerAddr(ctx))
	return status.Error(codes.PermissionDenied, reason)
}
