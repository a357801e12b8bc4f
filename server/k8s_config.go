package server

// Configuration from CRDs: on Kubernetes the API server is the source
// of the configuration. Package crdsource watches the objects of every
// kind whose CRD is installed and hands them, one at a time, to
// kubeConfigStore, which puts each through applyResources and
// deleteResources — the path sigil apply and sigil delete take, with
// actor "kubernetes" — and marks what it stores with the object as its
// origin, so what sigil apply stored on the same server is never
// replaced or removed from Kubernetes (docs/kubernetes.md, "Configuration
// from CRDs").

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sigil-mesh/sigil/k8s/crdsource"
	"github.com/sigil-mesh/sigil/server/registry"
	"github.com/sigil-mesh/sigil/traffic"
)

// kubeConfigPart is the kubeParts entry of configuration from CRDs.
func (s *Server) kubeConfigPart() kubePart {
	return kubePart{name: "configuration", start: func(ctx context.Context, wg *sync.WaitGroup) error {
		src, err := crdsource.New(crdsource.Options{
			Dynamic:   s.kube.Dynamic,
			Discovery: s.kube.Core.Discovery(),
			Store:     kubeConfigStore{s},
			Kinds:     kubeConfigKinds(),
			IsLeader:  s.kubeIsLeader,
			Log:       s.log,
			Now:       s.now,
		})
		if err != nil {
			return err
		}
		if err := s.metrics.reg.Register(objectsCollector{src}); err != nil {
			return fmt.Errorf("server: %w", err)
		}
		return src.Start(ctx, wg)
	}}
}

// objectsDesc is sigil_server_kubernetes_objects (docs/metrics.md).
var objectsDesc = prometheus.NewDesc("sigil_server_kubernetes_objects",
	"Configuration objects mirrored from Kubernetes, by kind and whether Sigil accepted them (accepted=\"false\": refused, Accepted=False in their status).",
	[]string{"kind", "accepted"}, nil)

// objectsCollector reads the source's answers at scrape time.
type objectsCollector struct {
	src interface{ Counts() []crdsource.Count }
}

func (c objectsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- objectsDesc }

func (c objectsCollector) Collect(ch chan<- prometheus.Metric) {
	for _, n := range c.src.Counts() {
		ch <- prometheus.MustNewConstMetric(objectsDesc, prometheus.GaugeValue, float64(n.Objects), n.Kind, strconv.FormatBool(n.Accepted))
	}
}

// kubeConfigKinds are the kinds mirrored from Kubernetes, each where its
// CRD is installed: Istio's, Sigil's, and Gateway API's routes attached
// to a Service (package gatewayapi turns them into VirtualServices on
// the configuration path).
func kubeConfigKinds() []crdsource.Kind {
	return []crdsource.Kind{crdsource.VirtualService, crdsource.DestinationRule, crdsource.Policy, crdsource.HTTPRoute, crdsource.GRPCRoute}
}

// kubeIsLeader says whether this replica writes the objects' status:
// the leader when leader election runs (kubeLeader set), else every
// replica (their writes are idempotent).
func (s *Server) kubeIsLeader() bool {
	if s.kubeLeader == nil {
		return true
	}
	return s.kubeLeader()
}

// kubeConfigStore is crdsource's Store: the server's configuration.
type kubeConfigStore struct{ s *Server }

func kubeOrigin(obj crdsource.Object) string {
	return registry.OriginKubernetes + "/" + obj.String()
}

// Apply parses the object's document as sigil apply parses a file and
// stores what it holds; a refusal carries the reason and the message
// sigil apply would print. Resources the object stored before and no
// longer holds are removed.
func (k kubeConfigStore) Apply(ctx context.Context, obj crdsource.Object, doc []byte) error {
	parsed, err := parseConfig(doc, obj.String())
	if err != nil {
		return parseRefusal(obj, err)
	}
	err = k.apply(ctx, []crdsource.Object{obj}, parsed, nil)
	var refusal *crdsource.Refusal
	if errors.As(err, &refusal) {
		refusal.Message = trimDocument(obj, refusal.Message)
	}
	return err
}

// ApplyAll is crdsource's batch write (its initial sync): each document
// parsed on its own (a document that does not parse is refused alone,
// with the refusal Apply gives), then the others in one applyResources,
// so that n objects cost one check of the configuration, not n (each
// apply translates the Gateway API routes of the namespaces it touches:
// the n routes of one Service made n translations of up to n routes).
func (k kubeConfigStore) ApplyAll(ctx context.Context, objs []crdsource.Object, docs [][]byte) (map[int]*crdsource.Refusal, error) {
	refused := map[int]*crdsource.Refusal{}
	var good []crdsource.Object
	var parsed []traffic.Resource
	var origins []string
	for i, obj := range objs {
		rs, err := parseConfig(docs[i], obj.String())
		if err != nil {
			refused[i] = parseRefusal(obj, err)
			continue
		}
		good = append(good, obj)
		parsed = append(parsed, rs...)
		for range rs {
			origins = append(origins, kubeOrigin(obj))
		}
	}
	if len(good) == 0 {
		return refused, nil
	}
	return refused, k.apply(ctx, good, parsed, origins)
}

// parseRefusal is the refusal of obj's document, which does not parse.
func parseRefusal(obj crdsource.Object, err error) *crdsource.Refusal {
	return &crdsource.Refusal{Reason: ReasonInvalid, Message: trimDocument(obj, err.Error())}
}

// trimDocument is sigil apply's text of a refusal, less the name of the
// file and document that an object's status need not repeat.
func trimDocument(obj crdsource.Object, msg string) string {
	return strings.TrimPrefix(msg, "traffic: "+obj.String()+": document 1: ")
}

// apply stores the resources parsed from objs in one write, each with
// origins' origin (nil: objs[0]'s), then removes what each object stored
// before and no longer holds. A refusal is a *crdsource.Refusal.
func (k kubeConfigStore) apply(ctx context.Context, objs []crdsource.Object, parsed []traffic.Resource, origins []string) error {
	mine := map[string]bool{} // the objects' origins
	for _, obj := range objs {
		mine[kubeOrigin(obj)] = true
	}
	_, err := k.s.applyResources(ctx, configWrite{parsed: parsed, actor: actorKubernetes, origin: kubeOrigin(objs[0]), origins: origins})
	var refusal *configRefusal
	if errors.As(err, &refusal) {
		return &crdsource.Refusal{Reason: refusal.Reason, Message: refusal.Message}
	}
	if err != nil {
		return err
	}
	held := map[string]bool{}
	for _, p := range parsed {
		held[p.Key()] = true
	}
	// One object: its own origin's; more: every Kubernetes origin's,
	// read once.
	stored, err := k.s.keysOfOrigin(ctx, kubeOrigin(objs[0]), false)
	if len(objs) > 1 {
		stored, err = k.s.keysOfOrigin(ctx, registry.OriginKubernetes+"/", true)
	}
	if err != nil {
		return err
	}
	stale := map[string][]registry.ResourceKey{} // by origin
	for _, r := range stored {
		if mine[r.Origin] && !held[r.Kind+"/"+r.Namespace+"/"+r.Name] {
			stale[r.Origin] = append(stale[r.Origin], registry.ResourceKey{Kind: r.Kind, Namespace: r.Namespace, Name: r.Name})
		}
	}
	var errs []error
	for origin, keys := range stale {
		if _, err := k.s.deleteResources(ctx, keys, actorKubernetes, origin); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Delete removes the resources obj stored.
func (k kubeConfigStore) Delete(ctx context.Context, obj crdsource.Object) error {
	origin := kubeOrigin(obj)
	stored, err := k.s.keysOfOrigin(ctx, origin, false)
	if err != nil || len(stored) == 0 {
		return err
	}
	keys := make([]registry.ResourceKey, len(stored))
	for i, r := range stored {
		keys[i] = registry.ResourceKey{Kind: r.Kind, Namespace: r.Namespace, Name: r.Name}
	}
	_, err = k.s.deleteResources(ctx, keys, actorKubernetes, origin)
	return err
}

// Stored lists the objects whose resources the configuration holds.
func (k kubeConfigStore) Stored(ctx context.Context) ([]crdsource.Object, error) {
	stored, err := k.s.keysOfOrigin(ctx, registry.OriginKubernetes+"/", true)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []crdsource.Object
	for _, r := range stored {
		if seen[r.Origin] {
			continue
		}
		seen[r.Origin] = true
		obj, ok := crdsource.ParseObject(strings.TrimPrefix(r.Origin, registry.OriginKubernetes+"/"))
		if !ok {
			k.s.log.Warn("stored resource has an origin that names no Kubernetes object; left alone", "resource", r.Kind+" "+r.Namespace+"/"+r.Name, "reason", r.Origin)
			continue
		}
		out = append(out, obj)
	}
	return out, nil
}
