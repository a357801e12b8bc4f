// Package logflag gives every Sigil binary the same --log-level flag and
// JSON log format on stderr.
package logflag

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

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

// RunE makes a cobra RunE that builds the logger and runs fn with a
// context cancelled on SIGINT or SIGTERM: every daemon starts this way.
func RunE(logger func() (*slog.Logger, error), fn func(ctx context.Context, log *slog.Logger) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		log, err := logger()
		if err != nil {
			return err
		}
		ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return fn(ctx, log)
	}
}
