package main

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// pflag reads a `quoted` word in a flag's usage as the name of its value
// (--image make image in the help): usages must not quote with backticks.
func TestInstallFlagUsageHasNoBackticks(t *testing.T) {
	newInstall().Flags().VisitAll(func(f *pflag.Flag) {
		if strings.Contains(f.Usage, "`") {
			name, _ := pflag.UnquoteUsage(f)
			t.Errorf("--%s: usage %q has a backtick: the help shows --%s %s", f.Name, f.Usage, f.Name, name)
		}
	})
}
