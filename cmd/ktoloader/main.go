// Command ktoloader turns tool-calling chat data into training-ready KTO and SFT shards for
// Mistral v0.3 and trains on them. Exit codes: 0 success, 1 the run failed, 2 usage error.
//
// It is the top layer and may import every package of this module; the commands are flag
// wiring over internal/pipeline, export, export/report, kto/train and the helpers.
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// usageError marks errors that are the caller's fault (bad flags or arguments): exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// usagef returns a usage error (exit code 2).
func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

var rootCmd = &cobra.Command{
	Use:   "ktoloader",
	Short: "Turn tool-calling chat data into KTO/SFT shards for Mistral v0.3, and train on them",
	Long: `ktoloader reads tool-calling chat rows (OpenAI format: conversations, label, behavior),
validates every row, renders the Mistral v0.3 chat template token-exactly, and writes packed
KTO and SFT shards (Parquet, Arrow) with a manifest that TRL and the GomlX trainer read as is.

Exit codes: 0 success, 1 the run failed, 2 usage error.`,
	SilenceUsage:  true,
	SilenceErrors: true,
}

func init() {
	rootCmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
}

func main() {
	os.Exit(run(os.Args[1:]))
}

// run executes the CLI with args and returns the process exit code.
func run(args []string) int {
	rootCmd.SetArgs(expandOptionalValues(args))
	err := rootCmd.Execute()
	if err == nil {
		return 0
	}
	fmt.Fprintln(os.Stderr, "ktoloader:", err)
	var ue usageError
	if errors.As(err, &ue) || isCobraUsage(err) {
		return 2
	}
	return 1
}

// isCobraUsage recognises cobra's own argument errors (unknown command, wrong arg count),
// which it does not route through the flag error func.
func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "accepts ", "requires at least", "requires at most", "unknown flag", "unknown shorthand"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}
