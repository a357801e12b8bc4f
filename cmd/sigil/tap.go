package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/cmd/internal/termsafe"
	"github.com/spf13/cobra"
)

// tapFlags are the flags `sigil tap` and `sigil top` share.
type tapFlags struct {
	namespace, path, method string
	rate                    int
}

func (f *tapFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&f.namespace, "namespace", "n", "default", "the service's namespace")
	cmd.Flags().StringVar(&f.path, "path", "", "only requests whose path (without the query) starts with this prefix")
	cmd.Flags().StringVar(&f.method, "method", "", "only requests with this HTTP method")
	cmd.Flags().IntVar(&f.rate, "rate", adminv1.TapDefaultRate, fmt.Sprintf("events per second sampled at most, at every hop (1 to %d)", adminv1.TapMaxRate))
}

func (f *tapFlags) request(service string, max int) adminv1.TapRequest {
	return adminv1.TapRequest{Namespace: f.namespace, Service: service, PathPrefix: f.path, Method: strings.ToUpper(f.method), Max: max, Rate: f.rate}
}

func newTap(client clientFunc) *cobra.Command {
	var flags tapFlags
	var max int
	var output string
	cmd := &cobra.Command{
		Use:   "tap SERVICE",
		Short: "Stream a live, bounded sample of a service's requests (never headers, bodies or queries)",
		Long: `Stream a live sample of the requests the service's sidecars receive and
send: time, direction, method, authority, path (without the query), status,
latency, and the source and destination identities. Headers, bodies and
query strings are never carried, so no credential (authorization, cookie)
can show. The tap ends after --max events or when this command exits; a
sidecar whose tap is not renewed stops it on its own.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "" && output != "json" {
				return fmt.Errorf("-o %q: want json, or nothing for lines", output)
			}
			c, err := client()
			if err != nil {
				return err
			}
			w, errw := cmd.OutOrStdout(), cmd.ErrOrStderr()
			shown := -1 // the first status is printed, 0 sidecars included
			err = c.Tap(cmd.Context(), flags.request(args[0], max), func(line adminv1.TapLine) error {
				switch {
				case line.Event != nil && output == "json":
					b, err := json.Marshal(line.Event)
					if err != nil {
						return err
					}
					_, err = fmt.Fprintf(w, "%s\n", b)
					return err
				case line.Event != nil:
					_, err := fmt.Fprintln(w, tapLine(line.Event))
					return err
				case line.Status != nil && line.Status.End != "":
					fmt.Fprintf(errw, "tap ended: %s (%d events, %d dropped)\n", termsafe.Field(line.Status.End), line.Status.Events, line.Status.Dropped)
				case line.Status != nil && line.Status.Sidecars != shown:
					shown = line.Status.Sidecars
					fmt.Fprintf(errw, "tapping %s.%s: %d sidecar(s)\n", termsafe.Field(args[0]), termsafe.Field(flags.namespace), shown)
				}
				return nil
			})
			if errors.Is(err, cmd.Context().Err()) {
				return nil // interrupted: the tap ends with the connection
			}
			return err
		},
	}
	flags.add(cmd)
	cmd.Flags().IntVar(&max, "max", adminv1.TapDefaultMax, fmt.Sprintf("end after this many events (1 to %d)", adminv1.TapMaxEvents))
	cmd.Flags().StringVarP(&output, "output", "o", "", "json: one JSON object per event")
	return cmd
}

// tapLine is one event as a line, every field through termsafe.
func tapLine(ev *adminv1.TapEvent) string {
	dir := "in "
	if ev.Direction == "outbound" {
		dir = "out"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s %s %s status=%d latency=%.3fms src=%s", ev.Time.Format("15:04:05.000"), dir,
		termsafe.Field(ev.Method), termsafe.Field(ev.Authority), termsafe.Field(ev.Path), ev.Status, ev.LatencyMS, termsafe.Field(ev.Source))
	if ev.Destination != "" {
		fmt.Fprintf(&b, " dst=%s", termsafe.Field(ev.Destination))
	} else if ev.DestinationService != "" {
		fmt.Fprintf(&b, " dst=%s", termsafe.Field(ev.DestinationService))
	}
	if ev.DestinationSubset != "" {
		fmt.Fprintf(&b, " subset=%s", termsafe.Field(ev.DestinationSubset))
	}
	if ev.Route != "" {
		fmt.Fprintf(&b, " route=%s", termsafe.Field(ev.Route))
	}
	fmt.Fprintf(&b, " reporter=%s", termsafe.Field(ev.Reporter))
	return b.String()
}
