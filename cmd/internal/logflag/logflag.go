// Package logflag gives every Sigil binary the same --log-level flag and
// JSON log format on stderr.
package logflag

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
)

// Register adds --log-level to cmd and returns a function that builds the
// logger from it, refusing an unknown level by name.
func Register(cmd *cobra.Command) func() (*slog.Logger, error) {
	level := cmd.Flags().String("log-level", "info", "debug, info, warn or error")
	return func() (*slog.Logger, error) {
		var l slog.Level
		if err := l.UnmarshalText([]byte(*level)); err != nil {
			return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", *level)
		}
		return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
	}
}
