package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/cmd/internal/termsafe"
	"github.com/sigil-mesh/sigil/gatewayapi"
	"github.com/sigil-mesh/sigil/traffic"
	"github.com/spf13/cobra"
)

// readFiles reads -f arguments: files, directories (their .yaml, .yml and
// .json files; -R for subdirectories) and - for stdin. A file that is not
// UTF-8 is refused here, by name and byte offset: encoded for the server
// its bad bytes would silently become U+FFFD.
func readFiles(paths []string, recursive bool) ([]adminv1.File, error) {
	var out []adminv1.File
	add := func(name string, b []byte, err error) error {
		if err == nil {
			err = traffic.CheckUTF8(b, name)
		}
		if err == nil {
			out = append(out, adminv1.File{Name: name, Content: string(b)})
		}
		return err
	}
	for _, p := range paths {
		if p == "-" {
			b, err := io.ReadAll(os.Stdin)
			if err := add("stdin", b, err); err != nil {
				return nil, err
			}
			continue
		}
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			b, err := os.ReadFile(p)
			if err := add(p, b, err); err != nil {
				return nil, err
			}
			continue
		}
		var names []string
		err = filepath.WalkDir(p, func(path string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && path != p && !recursive {
				return filepath.SkipDir
			}
			switch strings.ToLower(filepath.Ext(path)) {
			case ".yaml", ".yml", ".json":
				names = append(names, path)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		sort.Strings(names)
		for _, n := range names {
			b, err := os.ReadFile(n)
			if err := add(n, b, err); err != nil {
				return nil, err
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no files to apply in %v", paths)
	}
	return out, nil
}

// resourceName prints a resource as kubectl does.
func resourceName(kind, ns, name string) string {
	group := traffic.GroupIstio
	switch kind {
	case traffic.KindPolicy:
		group = traffic.GroupSigil
	case traffic.KindHTTPRoute, traffic.KindGRPCRoute:
		group = traffic.GroupGateway
	}
	return termsafe.Field(strings.ToLower(kind)) + "." + group + "/" + termsafe.Field(name) + nsSuffix(ns)
}

func nsSuffix(ns string) string {
	if ns == "" || ns == "default" {
		return ""
	}
	return " (namespace " + termsafe.Field(ns) + ")"
}

func newApply(client clientFunc) *cobra.Command {
	var files []string
	var dryRun, recursive, reviewChanges bool
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR|-",
		Short: "Apply VirtualServices, DestinationRules, Policies, HTTPRoutes and GRPCRoutes (all or nothing)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return fmt.Errorf("-f is required")
			}
			if reviewChanges && !dryRun {
				return fmt.Errorf("--review needs --dry-run: review first, then apply")
			}
			c, err := client()
			if err != nil {
				return err
			}
			fs, err := readFiles(files, recursive)
			if err != nil {
				return err
			}
			resp, err := c.Apply(cmd.Context(), fs, dryRun)
			if err != nil {
				return err
			}
			suffix := ""
			if resp.DryRun {
				suffix = " (dry run)"
			}
			w := cmd.OutOrStdout()
			if reviewChanges {
				printWarnings(cmd.ErrOrStderr(), resp.Warnings)
				return writeReview(cmd.Context(), w, c, fs, resp)
			}
			for _, r := range resp.Results {
				fmt.Fprintf(w, "%s %s%s\n", resourceName(r.Kind, r.Namespace, r.Name), r.Action, suffix)
				if r.Diff != "" {
					fmt.Fprint(w, indent(r.Diff))
				}
			}
			if !resp.DryRun {
				fmt.Fprintf(w, "config version %d\n", resp.Version)
			}
			printWarnings(cmd.ErrOrStderr(), resp.Warnings)
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "file, directory or - (repeatable); multi-document YAML is read whole")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "validate and show what would change; change nothing")
	cmd.Flags().BoolVarP(&recursive, "recursive", "R", false, "read directories recursively")
	cmd.Flags().BoolVar(&reviewChanges, "review", false, "with --dry-run: print, in markdown, each change to what goes on the wire (headers, paths, faults, mirrors, redirects, weights, removals) with the share of the last 5m's traffic it would touch")
	return cmd
}

// printWarnings prints the server's warnings, one "warning: " line each,
// to stderr as kubectl does, so that stdout stays the list of results.
func printWarnings(w io.Writer, warnings []string) {
	for _, m := range warnings {
		fmt.Fprintf(w, "warning: %s\n", m)
	}
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

func newDelete(client clientFunc) *cobra.Command {
	var files []string
	var namespace string
	cmd := &cobra.Command{
		Use:   "delete (KIND NAME | -f FILE)",
		Short: "Delete VirtualServices, DestinationRules or Policies",
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			var targets []adminv1.ResourceKey
			switch {
			case len(files) > 0 && len(args) == 0:
				fs, err := readFiles(files, false)
				if err != nil {
					return err
				}
				for _, f := range fs {
					rs, err := gatewayapi.Parse([]byte(f.Content), f.Name)
					if err != nil {
						return err
					}
					for _, r := range rs {
						targets = append(targets, adminv1.ResourceKey{Kind: r.Kind, Namespace: r.Namespace, Name: r.Name})
					}
				}
			case len(args) == 2 && len(files) == 0:
				kind, ok := adminv1.KindOf(args[0])
				if !ok {
					return fmt.Errorf("unknown kind %q: want virtualservice, destinationrule, policy, httproute or grpcroute", args[0])
				}
				targets = append(targets, adminv1.ResourceKey{Kind: kind, Namespace: namespace, Name: args[1]})
			default:
				return fmt.Errorf("give KIND NAME, or -f FILE")
			}
			// One request, and one transaction, per batch: deleting
			// thousands takes seconds, not one round trip each.
			missing := 0
			for start := 0; start < len(targets); start += adminv1.MaxDeleteBatch {
				resp, err := c.DeleteConfigBatch(cmd.Context(), targets[start:min(start+adminv1.MaxDeleteBatch, len(targets))])
				if err != nil {
					return err
				}
				for _, r := range resp.Results {
					fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", resourceName(r.Kind, r.Namespace, r.Name), adminv1.Deleted)
				}
				for _, ref := range resp.NotFound {
					fmt.Fprintf(cmd.ErrOrStderr(), "Error from server (NotFound): %s not found\n", ref)
				}
				printWarnings(cmd.ErrOrStderr(), resp.Warnings)
				missing += len(resp.NotFound)
			}
			if missing > 0 {
				return fmt.Errorf("%d of %d resources not found", missing, len(targets))
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "delete the resources in these files")
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "default", "namespace")
	return cmd
}
