// Package kube tests Sigil on Kubernetes end to end: a real kube-apiserver
// and etcd (built by tools/kube/build.sh, `make kube-tools`) run on
// loopback, and Sigil's real binaries run against them as processes. No
// scheduler, controller manager or kubelet runs: each test creates the
// objects those would and starts the processes a pod would run itself, and
// says so. Without the binaries every test is skipped with a message
// saying how to build them.
package kube

import (
	"testing"

	"github.com/sigil-mesh/sigil/e2e/harness"
	"github.com/sigil-mesh/sigil/internal/race"
)

func TestMain(m *testing.M) { harness.Main(m, "../..", race.Enabled) }
