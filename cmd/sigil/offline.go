package main

import (
	"fmt"
	"os"

	"github.com/sigil-mesh/sigil/audit"
	"github.com/spf13/cobra"
)

// newAudit is `sigil audit verify FILE...`: checks the hash chain of
// exported audit trails, offline.
func newAudit() *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Audit trails"}
	cmd.AddCommand(&cobra.Command{
		Use:   "verify FILE...",
		Short: "Check that audit trails are whole: no line edited, removed or reordered",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			bad := 0
			for _, path := range args {
				f, err := os.Open(path)
				if err != nil {
					return err
				}
				sum, err := audit.Check(f)
				last := sum.Last
				f.Close()
				if err != nil {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: BROKEN: %v\n", path, err)
					bad++
					continue
				}
				if last.Seq == 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: ok, empty\n", path)
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: ok, %d events, last %s at %s; actions: %d committed, %d aborted, %d pending\n", path, last.Seq, last.Type,
					last.Time.Format("2006-01-02T15:04:05Z07:00"), sum.Committed, sum.Aborted, len(sum.Pending))
				// Pending: written before a store change whose outcome is
				// not recorded yet (the server is running, or stopped and
				// settles them when it starts).
				for _, e := range sum.Aborts {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: aborted: intent seq %s (%s records): %s\n", path, e.Details[audit.DetailIntentSeq], e.Details[audit.DetailIntentCount], e.Details[audit.DetailReason])
				}
				for _, e := range sum.Pending {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: pending: seq %d %s %s\n", path, e.Seq, e.Type, e.Subject)
				}
			}
			if bad > 0 {
				return fmt.Errorf("%d of %d trails failed verification", bad, len(args))
			}
			return nil
		},
	})
	return cmd
}
