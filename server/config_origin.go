package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/sigil-mesh/sigil/server/registry"
	"github.com/sigil-mesh/sigil/traffic"
)

// Where stored configuration came from. A resource has one origin: the
// admin API (sigil apply, Origin "") or one Kubernetes object (Origin
// registry.OriginKubernetes + "/" + the object's reference). A write
// never replaces or deletes a resource of another origin: on a server
// that both runs with --kubernetes and takes sigil apply, each side
// keeps what it wrote, and a name taken by the other is refused as a
// Conflict naming where the resource came from.

// describeOrigin says where a stored resource came from, for messages.
func describeOrigin(origin string) string {
	if ref, ok := strings.CutPrefix(origin, registry.OriginKubernetes+"/"); ok {
		return "Kubernetes object " + ref
	}
	return "sigil apply"
}

// checkOrigins refuses, as a Conflict, a resource of parsed whose stored
// namesake came from another origin than its own (originOf(i) is
// parsed[i]'s).
func checkOrigins(x *configIndex, parsed []traffic.Resource, originOf func(int) string) error {
	var errs []error
	for i, p := range parsed {
		origin := originOf(i)
		old, ok := x.items[p.Key()]
		if !ok || old.stored.Origin == origin {
			continue
		}
		how := "delete it there first"
		switch {
		case origin == "":
			how = "change or delete the Kubernetes object instead (kubectl)"
		case old.stored.Origin == "":
			how = "delete it with sigil delete before Kubernetes can own it"
		}
		errs = append(errs, fmt.Errorf("%s already comes from %s: %s", p.Ref(), describeOrigin(old.stored.Origin), how))
	}
	if len(errs) > 0 {
		return refuse(http.StatusConflict, ReasonConflict, "%v", errors.Join(errs...))
	}
	return nil
}

// policiesToCheck returns the policies of parsed that checkPolicies must
// compile and test: those whose spec differs from the one in force. A
// spec equal byte for byte to a stored, valid one passed the same
// checks when it was stored, so an unchanged policy (a resync from
// Kubernetes, a repeated sigil apply) costs no test run.
func (s *Server) policiesToCheck(ctx context.Context, parsed []traffic.Resource) []traffic.Resource {
	var policies []traffic.Resource
	for _, p := range parsed {
		if p.Policy != nil {
			policies = append(policies, p)
		}
	}
	if len(policies) == 0 {
		return nil
	}
	x, unlock, err := s.lockConfig(ctx)
	if err != nil {
		return policies // check them all; the write reports the store's error
	}
	defer unlock()
	out := policies[:0]
	for _, p := range policies {
		old, ok := x.items[p.Key()]
		spec, err := p.Spec()
		if ok && old.bad == nil && err == nil && bytes.Equal(old.stored.Spec, spec) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// keysOfOrigin lists the stored resources that came from origin, or,
// when prefix is set, from any origin starting with it.
func (s *Server) keysOfOrigin(ctx context.Context, origin string, prefix bool) ([]registry.StoredResource, error) {
	x, unlock, err := s.lockConfig(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	var out []registry.StoredResource
	for _, it := range x.items {
		o := it.stored.Origin
		if o == origin || (prefix && strings.HasPrefix(o, origin)) {
			out = append(out, it.stored)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		return a.Kind+"/"+a.Namespace+"/"+a.Name < b.Kind+"/"+b.Namespace+"/"+b.Name
	})
	return out, nil
}
