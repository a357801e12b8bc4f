//go:build tools

// Package kube pins the Kubernetes binaries the e2e suite runs: a real
// kube-apiserver and kubectl from k8s.io/kubernetes v1.37.2 (its staging
// modules mapped to v0.37.2 by the replace directives in go.mod) and etcd.
// It is a separate module so the mesh's own go.mod never carries them.
package kube

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
