package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/sigil-mesh/sigil/policy/replay"
	"github.com/spf13/cobra"
)

// newPolicyDiff is `sigil policy diff --base OLD --proposed NEW --replay
// DECISIONS...`: replays recorded decisions under both policies and lists
// the request classes whose decision would change (see package
// policy/replay).
func newPolicyDiff() *cobra.Command {
	var (
		base, proposed, format string
		files                  []string
		allowTightening        bool
	)
	cmd := &cobra.Command{
		Use:   "diff --base OLD --proposed NEW --replay DECISIONS...",
		Short: "Replay recorded decisions under two policies and list what would change",
		Long: `Re-evaluate recorded decisions (sidecar decision logs, the server's audit
export, or OPA decision-log upload bodies; gzip'd or not; - for stdin)
under the base and the proposed policy, each compiled as a sidecar compiles
it, and list every request class (source, destination, method, path
without its query) whose decision changes, with counts and an example
decision id. Exits non-zero when any decision goes from allow to deny,
unless --allow-tightening.`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			files = append(files, args...)
			switch {
			case base == "" || proposed == "":
				return errors.New("--base and --proposed are both required")
			case len(files) == 0:
				return errors.New("--replay: give at least one decision-log file (- for stdin)")
			}
			switch format {
			case "text", "markdown", "json":
			default:
				return fmt.Errorf("--format %q: want text, markdown or json", format)
			}
			ctx := cmd.Context()
			old, err := replay.Load(ctx, base)
			if err != nil {
				return fmt.Errorf("--base: %w", err)
			}
			next, err := replay.Load(ctx, proposed)
			if err != nil {
				return fmt.Errorf("--proposed: %w", err)
			}
			d := replay.NewDiff(old, next)
			stdinRead := false
			for _, name := range files {
				if name == "-" {
					if stdinRead {
						return errors.New("--replay: - (stdin) given twice")
					}
					stdinRead = true
					if err := d.ReadFrom(ctx, cmd.InOrStdin(), "stdin"); err != nil {
						return err
					}
					continue
				}
				f, err := os.Open(name)
				if err != nil {
					return fmt.Errorf("--replay: %w", err)
				}
				err = d.ReadFrom(ctx, f, name)
				f.Close()
				if err != nil {
					return err
				}
			}
			rep := d.Report()
			if rep.Replayed == 0 {
				return fmt.Errorf("no decision to replay in %v (%d records skipped): a diff of nothing proves nothing", files, rep.SkippedTotal())
			}
			w := cmd.OutOrStdout()
			switch format {
			case "markdown":
				err = rep.Markdown(w)
			case "json":
				err = rep.JSON(w)
			default:
				err = rep.Text(w)
			}
			if err != nil {
				return err
			}
			if rep.Tightened > 0 && !allowTightening {
				n := 0
				for _, c := range rep.Changes {
					if c.Direction == replay.AllowToDeny {
						n++
					}
				}
				return fmt.Errorf("the proposed policy denies %d recorded decisions the base allows (request classes: %d); pass --allow-tightening if that is intended", rep.Tightened, n)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&base, "base", "", "the policy in force: a directory of .rego files or one file")
	cmd.Flags().StringVar(&proposed, "proposed", "", "the proposed policy: a directory of .rego files or one file")
	cmd.Flags().StringArrayVar(&files, "replay", nil, "decision-log file to replay (repeatable; more may follow as arguments; - for stdin)")
	cmd.Flags().StringVar(&format, "format", "text", "text, markdown (a pull-request comment) or json")
	cmd.Flags().BoolVar(&allowTightening, "allow-tightening", false, "exit 0 even when decisions go from allow to deny")
	return cmd
}
