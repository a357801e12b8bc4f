#!/bin/sh
# Builds the Kubernetes binaries the e2e suite (e2e/kube) runs — kube-apiserver
# and kubectl of k8s.io/kubernetes v1.37.2, etcd v3.7 — into $SIGIL_KUBE_BIN
# (default ~/.cache/sigil-kube/v1.37.2), outside the repository, once: when all
# three are there it does nothing. A cold build takes about 6 minutes on 2
# cores and needs the Go module proxy.
set -eu
version=v1.37.2
dir=${SIGIL_KUBE_BIN:-$HOME/.cache/sigil-kube/$version}
if [ -x "$dir/kube-apiserver" ] && [ -x "$dir/kubectl" ] && [ -x "$dir/etcd" ]; then
	exit 0
fi
cd "$(dirname "$0")"
# The version the binaries report (kubectl version, /version): k8s.io's
# release builds set these; a plain go build leaves v0.0.0-master.
v=k8s.io/component-base/version
c=k8s.io/client-go/pkg/version
ld="-s -w -X $v.gitVersion=$version -X $v.gitMajor=1 -X $v.gitMinor=37 -X $v.gitTreeState=clean -X $c.gitVersion=$version -X $c.gitMajor=1 -X $c.gitMinor=37"
echo "building kube-apiserver, kubectl $version and etcd into $dir (about 6 minutes the first time)" >&2
tmp="$dir.tmp.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
go build -trimpath -ldflags "$ld" -o "$tmp/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl ./cmd/etcd
mkdir -p "$dir"
for b in kube-apiserver kubectl etcd; do
	mv "$tmp/$b" "$dir/$b"
done
