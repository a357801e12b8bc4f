package main

import (
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
		Long: `Checks the CA's local trail files (one hash chain each) and exported audit
stream files (the file exporter's JSON lines, or OPA decision-log upload
batches, gzip'd or not) from any number of writers: each writer's records
are ordered by seq, every hash and link is checked, recorded gaps and
duplicates are counted, and the first broken link of each writer is named
with its file and line. Exits non-zero when anything is broken.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return verifyAuditFiles(cmd.OutOrStdout(), args)
		},
	})
	return cmd
}
