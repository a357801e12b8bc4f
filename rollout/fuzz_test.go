package rollout

import (
	"encoding/json"
	"testing"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
)

// Whatever VirtualService the server holds, choosing the rollout's route
// and rewriting its weights never panics, and a rewritten route sends
// exactly the step's per cent to --to.
func FuzzRolloutTarget(f *testing.F) {
	f.Add(vsSpec)
	f.Add(`{"hosts":["api"],"http":[{"route":[{"destination":{"host":"api","subset":"v1"},"weight":90},{"destination":{"host":"api","subset":"v2"},"weight":10}]}]}`)
	f.Add(`{"hosts":["api"],"http":[{"route":[{"destination":"api"}]},{"route":[{"destination":{"host":"api","subset":"v2"}}]}]}`)
	f.Add(`{"hosts":[1],"http":{"route":[]}}`)
	f.Fuzz(func(t *testing.T, spec string) {
		tg, err := findTarget([]adminv1.Resource{{Namespace: "default", Name: "api", Spec: json.RawMessage(spec)}}, config())
		if err != nil {
			return
		}
		file, err := tg.withWeights("v2", 25)
		if err != nil {
			return
		}
		var doc struct {
			Spec struct {
				HTTP []struct {
					Route []struct {
						Destination struct{ Subset string }
						Weight      int
					}
				}
			}
		}
		if err := json.Unmarshal([]byte(file.Content), &doc); err != nil {
			t.Fatalf("rewritten resource is not JSON: %v", err)
		}
		w := map[string]int{}
		for _, d := range doc.Spec.HTTP[tg.route].Route {
			w[d.Destination.Subset] += d.Weight
		}
		if w["v2"] != 25 || w[tg.from] != 75 || len(w) != 2 {
			t.Fatalf("weights %v after a 25 %% step from %s", w, tg.from)
		}
	})
}
