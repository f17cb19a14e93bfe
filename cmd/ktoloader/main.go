// Command ktoloader turns tool-calling chat data into training-ready KTO and SFT shards for
// Mistral v0.3 and trains on them. Exit codes: 0 success, 1 the run failed, 2 usage error.
package main

import (
	"errors"
	"fmt"
	"os"
	"sync"

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

var wrapOnce sync.Once

// run executes the CLI with args and returns the process exit code: 2 for errors of type
// usageError (flags, arguments, refusals before any work), 1 for every other error. (`go run`
// prints "exit status N" and itself exits 1; the built binary exits N.)
func run(args []string) int {
	wrapOnce.Do(func() { wrapArgs(rootCmd) })
	rootCmd.SetArgs(args)
	var err error
	if _, _, ferr := rootCmd.Find(args); ferr != nil {
		err = usageError{ferr} // an unknown command: cobra's lookup, before any command runs
	} else {
		err = rootCmd.Execute()
	}
	if err == nil {
		return 0
	}
	fmt.Fprintln(rootCmd.ErrOrStderr(), "ktoloader:", err)
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// wrapArgs makes every command's positional-argument check return a usageError, so that
// exit codes come from error types, never from matching cobra's messages.
func wrapArgs(cmd *cobra.Command) {
	if check := cmd.Args; check != nil {
		cmd.Args = func(c *cobra.Command, args []string) error {
			if err := check(c, args); err != nil {
				return usageError{err}
			}
			return nil
		}
	}
	for _, c := range cmd.Commands() {
		wrapArgs(c)
	}
}
