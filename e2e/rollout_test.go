package e2e

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/e2e/harness"
)

// sigil rollout through the real binaries: the figures it judges come from
// web's sidecar (the source, which knows the subset each request went to)
// through its agent to the server's window, every 10 s, so each step is
// judged on reports sent 20 s (--report-delay) after it began. The
// intervals are short (12 s) to keep the tests bounded; the step logic's
// every branch is in rollout/rollout_test.go.

// rolloutMesh is web calling api v1 and v2 (v2's app started with
// v2Args), every request on v1 to begin with, and steady load from web.
func rolloutMesh(t *testing.T, v2Args ...string) *trafficMesh {
	t.Helper()
	tm := startTrafficMesh(t, &backend{name: "api-v1", version: "v1"}, &backend{name: "api-v2", version: "v2", appArgs: v2Args})
	tm.apply(t, subsetsDR+"---\n"+splitVS(100, 0))
	// 50 requests a second, for as long as the test runs (at most 5
	// minutes): enough for v2 to reach --min-requests at 10 %.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		end := time.After(5 * time.Minute)
		for {
			select {
			case <-stop:
				return
			case <-end:
				return
			case <-tick.C:
				tm.get("/", nil)
			}
		}
	}()
	t.Cleanup(func() { close(stop); wg.Wait() })
	return tm
}

// apiWeights reads the stored VirtualService's weight of each subset.
func apiWeights(t *testing.T, tm *trafficMesh) map[string]int {
	t.Helper()
	vss, err := tm.admin().ListConfig(t.Context(), "virtualservices")
	if err != nil {
		t.Fatal(err)
	}
	for _, vs := range vss {
		if vs.Name != "api" {
			continue
		}
		var spec struct {
			HTTP []struct {
				Route []struct {
					Destination struct{ Subset string }
					Weight      int
				}
			}
		}
		if err := json.Unmarshal(vs.Spec, &spec); err != nil {
			t.Fatal(err)
		}
		out := map[string]int{}
		for _, d := range spec.HTTP[0].Route {
			out[d.Destination.Subset] = d.Weight
		}
		return out
	}
	t.Fatal("no virtualservice api")
	return nil
}

// startRollout runs sigil rollout to v2. The p99 bound is loose (2 s): a
// -race build on a shared machine answers slowly at times, and the latency
// bound has its own test (rollout/rollout_test.go, "slow v2").
func startRollout(t *testing.T, tm *trafficMesh, steps string) *harness.Proc {
	t.Helper()
	return harness.Start(t, "sigil", "rollout", "api", "--to", "v2", "--steps", steps, "--interval", "12s",
		"--min-success-rate", "99", "--max-p99", "2s", "--admin-socket", adminv1.AdminSocket(tm.ids.m.DataDir))
}

// A v2 that fails 20 % of its requests is rolled back at the first step,
// and the rollout says why.
func TestRolloutRollsBackFailingSubset(t *testing.T) {
	tm := rolloutMesh(t, "--fail-every", "5")
	r := startRollout(t, tm, "10,25,50,100")
	if code := r.Wait(120 * time.Second); code != 1 {
		t.Fatalf("sigil rollout exited %d, want 1 (rolled back)", code)
	}
	out := r.Output()
	t.Logf("sigil rollout:\n%s", out)
	if !strings.Contains(out, "rolling back: step 1 (v2 at 10 %): success rate") || !strings.Contains(out, "below --min-success-rate 99 %") {
		t.Fatalf("no rollback at step 1 for the success rate in:\n%s", out)
	}
	if strings.Contains(out, "step 2/4") {
		t.Fatalf("went past step 1:\n%s", out)
	}
	if w := apiWeights(t, tm); w["v1"] != 100 || w["v2"] != 0 {
		t.Fatalf("weights after the rollback %v, want v1 100, v2 0", w)
	}
}

// A healthy v2 reaches 100 %, one applied step at a time.
func TestRolloutPromotesHealthySubset(t *testing.T) {
	tm := rolloutMesh(t)
	r := startRollout(t, tm, "10,50,100")
	if code := r.Wait(240 * time.Second); code != 0 {
		t.Fatalf("sigil rollout exited %d, want 0:\n%s", code, r.Output())
	}
	out := r.Output()
	t.Logf("sigil rollout:\n%s", out)
	for _, want := range []string{"step 1/3: v2 at 10 %", "step 2/3: v2 at 50 %", "step 3/3: v2 at 100 %", "rollout complete: v2 takes 100 % of api.default"} {
		if !strings.Contains(out, want) {
			t.Fatalf("no %q in:\n%s", want, out)
		}
	}
	if w := apiWeights(t, tm); w["v1"] != 0 || w["v2"] != 100 {
		t.Fatalf("weights after the rollout %v, want v1 0, v2 100", w)
	}
	tm.waitSynced(t)
	if by, failed := count(tm.load(20, 2, "/", nil)); by["api-v2"] != 20 || failed != 0 {
		t.Fatalf("after the rollout: %v, %d failed; want every request on v2", by, failed)
	}
}
