package policy

import (
	"context"
	"fmt"

	"github.com/open-policy-agent/opa/v1/rego"
)

// ReadSourcesRevision is ReadSources with the revision a sidecar loading
// path would report (Engine.Revision, the bundles revision of its
// decision logs): the SHA-256 over the files' names and contents.
func ReadSourcesRevision(path string) (map[string]string, string, error) {
	return readSources(path)
}

// Evaluate decides in under q (a query from Compile) as an Engine's Decide
// does, without a decision cache or log: the same input document, and
// anything but allow == true denies. A recorded input replayed here (see
// package policy/replay) is decided exactly as the sidecar would decide it.
func Evaluate(ctx context.Context, q rego.PreparedEvalQuery, in *Input) (bool, error) {
	in.Request.fill()
	rs, err := q.Eval(ctx, rego.EvalParsedInput(in.value()))
	if err != nil {
		return false, fmt.Errorf("policy: evaluation: %w", err)
	}
	return len(rs) == 1 && len(rs[0].Expressions) == 1 && rs[0].Expressions[0].Value == true, nil
}
