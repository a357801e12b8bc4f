// Package e2e tests Sigil end to end: the real binaries run as processes on
// loopback, and real clients (go-spiffe, grpc-go) talk to them.
package e2e

import (
	"testing"

	"github.com/sigil-mesh/sigil/e2e/harness"
	"github.com/sigil-mesh/sigil/internal/race"
)

func TestMain(m *testing.M) { harness.Main(m, "..", race.Enabled) }
