package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/sigil-mesh/sigil/proxy"
	"github.com/spf13/cobra"
)

// newReady is the sidecar's probe for Kubernetes (the injected startup
// probe): it asks the admin endpoint's /ready on loopback, where the
// kubelet's HTTP probes cannot reach, and exits 0 only on 200.
func newReady() *cobra.Command {
	var admin string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use: "ready", Short: "Exit 0 if the sidecar at --admin is ready (its /ready answers 200)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/ready", nil)
			if err != nil {
				return fmt.Errorf("--admin %q: %w", admin, err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: %s", resp.Status, body)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&admin, "admin", proxy.DefaultAdmin, "HOST:PORT of the sidecar's admin endpoint")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Second, "give up after this long")
	return cmd
}
