package installcheck

// Pre-install checks: may the caller create what `sigil install` prints,
// and is the cluster free of an earlier installation? Both are derived
// from the manifests themselves (package deploy), so a kind added there is
// checked here without a second list to keep.

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/sigil-mesh/sigil/deploy"
	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
)

const (
	catPre      = "pre-kubernetes-setup"
	catConflict = "pre-existing-installation"
)

// placeholderTrustDomain renders the manifests for their kinds and names,
// which do not depend on the trust domain.
const placeholderTrustDomain = "example.org"

// planned is one object the manifests create, with its resource.
type planned struct {
	obj deploy.Object
	gvr schema.GroupVersionResource
}

// plan renders the manifests for e's namespace and finds each object's
// resource through the API server's discovery, once per Env.
func plan(e *Env) ([]planned, error) {
	if e.plans == nil && e.planErr == nil {
		e.plans, e.planErr = discoverPlan(e)
	}
	return e.plans, e.planErr
}

func discoverPlan(e *Env) ([]planned, error) {
	out, err := deploy.Render(deploy.Params{TrustDomain: placeholderTrustDomain, Namespace: e.Namespace})
	if err != nil {
		return nil, err
	}
	objs, err := deploy.Objects(out)
	if err != nil {
		return nil, err
	}
	resources := map[string]*metav1.APIResourceList{}
	var plans []planned
	for _, o := range objs {
		gv, err := schema.ParseGroupVersion(o.APIVersion())
		if err != nil {
			return nil, fmt.Errorf("installcheck: %s %s: %w", o.Kind(), o.Name(), err)
		}
		list, ok := resources[gv.String()]
		if !ok {
			list, err = e.Clients.Core.Discovery().ServerResourcesForGroupVersion(gv.String())
			if err != nil && !apierrors.IsNotFound(err) && !discovery.IsGroupDiscoveryFailedError(err) {
				return nil, fmt.Errorf("installcheck: discovering %s: %w", gv, err)
			}
			resources[gv.String()] = list
		}
		var resource string
		if list != nil {
			for _, r := range list.APIResources {
				if r.Kind == o.Kind() && !strings.Contains(r.Name, "/") {
					resource = r.Name
				}
			}
		}
		if resource == "" {
			return nil, fmt.Errorf("installcheck: the API server serves no %s in %s (Kubernetes too old, or an API group turned off)", o.Kind(), gv)
		}
		plans = append(plans, planned{obj: o, gvr: gv.WithResource(resource)})
	}
	return plans, nil
}

func preChecks() []Check {
	return []Check{
		{Category: catPre, Name: "can create every object `sigil install` prints", Run: canCreateAll},
		{Category: catConflict, Name: "no Sigil installation is present", Run: noInstallation},
		{Category: catConflict, Name: "no CRD Sigil ships is installed already", Run: noForeignCRDs},
	}
}

// canCreateAll asks the API server (SelfSubjectAccessReview) whether the
// caller may create each kind of object, in each namespace, that the
// manifests hold.
func canCreateAll(ctx context.Context, e *Env) Result {
	plans, err := plan(e)
	if err != nil {
		return fail(err.Error(), "")
	}
	var denied, asked []string
	seen := map[string]bool{}
	for _, p := range plans {
		what := p.obj.Kind()
		if p.obj.Namespace() != "" {
			what += " in " + p.obj.Namespace()
		}
		if seen[what] {
			continue
		}
		seen[what] = true
		asked = append(asked, what)
		review, err := e.Clients.Core.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: "create", Group: p.gvr.Group, Resource: p.gvr.Resource, Namespace: p.obj.Namespace(),
			}},
		}, metav1.CreateOptions{})
		if err != nil {
			return fail(fmt.Sprintf("asking whether you may create %s: %v", what, err), "")
		}
		if !review.Status.Allowed {
			denied = append(denied, what)
		}
	}
	if len(denied) > 0 {
		return fail("you may not create "+strings.Join(denied, ", "),
			"install as a cluster administrator (cluster-admin): the installation creates cluster-wide RBAC, CRDs and a webhook configuration")
	}
	return pass(fmt.Sprintf("%d kinds", len(asked)))
}

// noInstallation fails when an object of the manifests, other than a CRD,
// exists already: applying over it would mix two installations.
func noInstallation(ctx context.Context, e *Env) Result {
	found, err := existing(ctx, e, func(o deploy.Object) bool { return o.Kind() != kindCRD })
	if err != nil {
		return fail(err.Error(), "")
	}
	if len(found) > 0 {
		return fail(strings.Join(found, ", ")+" exist",
			"Sigil is installed already: run `sigil check` to check it, or uninstall it first (docs/kubernetes.md, Uninstall)")
	}
	return pass("")
}

// noForeignCRDs warns about CRDs of the manifests that exist already (an
// Istio or Gateway API installation's): applying Sigil's copies would
// replace them.
func noForeignCRDs(ctx context.Context, e *Env) Result {
	found, err := existing(ctx, e, func(o deploy.Object) bool { return o.Kind() == kindCRD })
	if err != nil {
		return fail(err.Error(), "")
	}
	if len(found) > 0 {
		return warn(strings.Join(found, ", ")+" exist",
			"kubectl apply of `sigil install` replaces these definitions with Sigil's copies: where Istio installed them, run `sigil install --skip-istio-crds` and keep the cluster's own")
	}
	return pass("")
}

const kindCRD = "CustomResourceDefinition"

// existing names the objects of the manifests that which selects and the
// cluster holds already, sorted.
func existing(ctx context.Context, e *Env, which func(deploy.Object) bool) ([]string, error) {
	plans, err := plan(e)
	if err != nil {
		return nil, err
	}
	var found []string
	for _, p := range plans {
		if !which(p.obj) {
			continue
		}
		exists, err := objectExists(ctx, e, p)
		if err != nil {
			return nil, err
		}
		if exists {
			found = append(found, describe(p.obj))
		}
	}
	slices.Sort(found)
	return found, nil
}

func objectExists(ctx context.Context, e *Env, p planned) (bool, error) {
	var err error
	if ns := p.obj.Namespace(); ns != "" {
		_, err = e.Clients.Dynamic.Resource(p.gvr).Namespace(ns).Get(ctx, p.obj.Name(), metav1.GetOptions{})
	} else {
		_, err = e.Clients.Dynamic.Resource(p.gvr).Get(ctx, p.obj.Name(), metav1.GetOptions{})
	}
	switch {
	case err == nil:
		return true, nil
	case apierrors.IsNotFound(err):
		return false, nil
	default:
		return false, fmt.Errorf("installcheck: looking for %s: %w", describe(p.obj), err)
	}
}

// describe names an object as kubectl would: Kind namespace/name.
func describe(o deploy.Object) string {
	if o.Namespace() != "" {
		return o.Kind() + " " + o.Namespace() + "/" + o.Name()
	}
	return o.Kind() + " " + o.Name()
}
