package server

// Automatic workload identity on Kubernetes (--k8s-auto-identity, on by
// default with --kubernetes): package k8s/podidentity synthesizes an
// entry for every pod bound to a node, and the agent API reads them beside
// the registry's (agentEntries, entryFor), so a pod's node agent is
// streamed and signed spiffe://<td>/ns/<ns>/sa/<sa> with no entry created,
// and no other agent ever is.

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/sigil-mesh/sigil/k8s/podidentity"
	"github.com/sigil-mesh/sigil/server/registry"
)

// podSyncTimeout bounds the first listing of the cluster's pods.
const podSyncTimeout = time.Minute

// podsPart is the kubeParts entry of automatic identity.
func (s *Server) podsPart() kubePart {
	return kubePart{name: "automatic identity", start: func(ctx context.Context, _ *sync.WaitGroup) error {
		if s.cfg.Kubernetes.DisableAutoIdentity {
			s.log.Info("automatic pod identity off (--k8s-auto-identity=false): pods get identities from entries only")
			return nil
		}
		// The Pod informer is discovery's too (one list and watch, one
		// cache: s.kubeInformers).
		idx, err := podidentity.New(s.kubeInformers, podidentity.Options{
			TrustDomain: s.cfg.td, Cluster: s.cfg.Kubernetes.Cluster,
			OnChange: s.changes.Notify, Now: s.now, Log: s.log,
		})
		if err != nil {
			return err
		}
		idx.Start(ctx)
		syncCtx, cancel := context.WithTimeout(ctx, podSyncTimeout)
		defer cancel()
		if err := idx.Synced(syncCtx); err != nil {
			return err
		}
		s.pods.Store(idx)
		s.changes.Notify() // streams opened before the pods were listed
		return nil
	}}
}

// agentEntries returns the entries whose parent is agent: the registry's
// and, with automatic identity, those of the pods bound to its node.
func (s *Server) agentEntries(ctx context.Context, agent string) ([]registry.Entry, error) {
	entries, _, err := s.store.ListEntries(ctx, agent)
	if err != nil {
		return nil, err
	}
	if idx := s.pods.Load(); idx != nil {
		entries = append(entries, idx.Entries(agent)...)
	}
	return entries, nil
}

// getEntry returns the entry with this ID from the registry or, with
// automatic identity, the pods' synthesized entries.
func (s *Server) getEntry(ctx context.Context, id string) (registry.Entry, error) {
	e, err := s.store.GetEntry(ctx, id)
	if !errors.Is(err, registry.ErrNotFound) {
		return e, err
	}
	if idx := s.pods.Load(); idx != nil {
		if pe, ok := idx.Entry(id); ok {
			return pe, nil
		}
	}
	return e, err
}
