// Command ktoloader turns tool-calling chat data into training-ready KTO and SFT shards for
// Mistral v0.3 and trains on them. Exit codes: 0 success, 1 the run failed, 2 usage error.
//
// It is the top layer and may import every package of this module; the commands are flag
// wiring over internal/pipeline, export, export/report, kto/train and the helpers. Each run
// builds its command tree afresh (newRootCmd): flag values live in each command's own flags
// struct, so nothing carries over from one run to the next in one process.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/ktoloader/ktoloader/internal/hub"
	"github.com/ktoloader/ktoloader/kto/train"
)

// usageError marks errors that are the caller's fault (bad flags or arguments): exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// UsageError is what exitCode looks for in an error chain: other packages' usage errors
// (internal/outdir's refusals) implement it too.
func (usageError) UsageError() bool { return true }

// usagef returns a usage error (exit code 2).
func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// stdio is where a run reads and writes; a nil field means the process's own stream.
type stdio struct {
	in       io.Reader
	out, err io.Writer
}

func main() {
	os.Exit(run(os.Args[1:], stdio{os.Stdin, os.Stdout, os.Stderr}))
}

// run executes the CLI with args on a fresh command tree and returns the process exit code.
func run(args []string, s stdio) int {
	// The trainer resolves repo ids through the one Hub client (internal/hub), which this
	// command package owns so that kto/train carries no HTTP code.
	train.ResolveRepo = resolveRepo
	if s.err == nil {
		s.err = os.Stderr
	}
	root := newRootCmd()
	root.SetIn(s.in)
	root.SetOut(s.out)
	root.SetErr(s.err)
	root.SetArgs(expandOptionalValues(root, args))
	err := root.Execute()
	if err == nil {
		return 0
	}
	fmt.Fprintln(s.err, "ktoloader:", err)
	return exitCode(err)
}

// newRootCmd builds the whole command tree, every flag at its default.
func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "ktoloader",
		Short: "Turn tool-calling chat data into KTO/SFT shards for Mistral v0.3, and train on them",
		Long: `ktoloader reads tool-calling chat rows (OpenAI format: conversations, label, behavior),
validates every row, renders the Mistral v0.3 chat template token-exactly, and writes packed
KTO and SFT shards (Parquet, Arrow) with a manifest that TRL and the GomlX trainer read as is.

Exit codes: 0 success, 1 the run failed, 2 usage error.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// With Args set, cobra hands an unknown subcommand here instead of making its own error.
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q for %q", args[0], cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(
		newDumpCmd(),
		newEncodeCmd(),
		newGenCmd(),
		newGenModelCmd(),
		newInspectCmd(),
		newMergeCmd(),
		newPrepCmd(),
		newRenderCmd(),
		newReportCmd(),
		newScoreCmd(),
		newTrainCmd(),
		newValidateCmd(),
		newVerifyCmd(),
	)
	wrapArgs(root)
	return root
}

// exitCode is 2 for an error chain that holds a usage error, else 1.
func exitCode(err error) int {
	var u interface{ UsageError() bool }
	if errors.As(err, &u) && u.UsageError() {
		return 2
	}
	return 1
}

// wrapArgs makes every command's argument check (cobra.NoArgs, ExactArgs, …) return a
// usage error, so exit codes come from error types and never from matching messages.
func wrapArgs(c *cobra.Command) {
	if check := c.Args; check != nil {
		c.Args = func(cmd *cobra.Command, args []string) error {
			if err := check(cmd, args); err != nil {
				return usageError{err}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		wrapArgs(sub)
	}
}

// resolveRepo is kto/train's Hub resolver: a repo id to a local snapshot directory.
func resolveRepo(spec string, offline bool, status func(string)) (string, error) {
	res, err := hub.ResolveModel(spec, hub.Options{Offline: offline})
	if err != nil {
		return "", err
	}
	for _, n := range res.Notes {
		status(n)
	}
	return res.Dir, nil
}
