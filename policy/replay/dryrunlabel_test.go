package replay

import (
	"strings"
	"testing"
)

// A sidecar's decision log holds, for a request a dry-run Policy
// resource also judged, two records marked by labels.mode: only the
// enforced one is replayed, so each request counts once.
func TestPolicyResourceDryRunLinesNotReplayed(t *testing.T) {
	const in = `{"request":{"method":"GET"}}`
	log := `{"labels":{"mode":"enforce","service":"api"},"decision_id":"a","path":"sigil/authz/allow","input":` + in + `,"result":true}` + "\n" +
		`{"labels":{"mode":"dryrun","service":"api"},"decision_id":"b","path":"sigil/authz/allow","input":` + in + `,"result":false}` + "\n"
	var ids []string
	skips, err := Read(strings.NewReader(log), "d.log", func(r Recorded) error {
		ids = append(ids, r.ID)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 1 || ids[0] != "a" || len(skips) != 1 || !strings.HasPrefix(skips[0].Reason, "dry-run decision") {
		t.Fatalf("replayed %v, skipped %+v: want a replayed, b skipped as dry-run", ids, skips)
	}
}
