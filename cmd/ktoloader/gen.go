package main

import (
	"bufio"

	"github.com/spf13/cobra"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/internal/gen"
)

// gen writes synthetic rows (package internal/gen) for benchmarks and scale tests.
type genFlags struct {
	rows int64
	seed uint64
	out  string
}

func newGenCmd() *cobra.Command {
	var f genFlags
	cmd := &cobra.Command{
		Use:   "gen --rows N [--seed S] [--out FILE|-]",
		Short: "Write synthetic tool-calling KTO rows shaped like the Nexus data (for benchmarks)",
		Long: `gen writes N synthetic JSONL rows shaped like the Nexus KTO data set: system prompts with
session ids, user requests, tool calls with JSON-string arguments and ids of the shapes real
logs have, text answers, 12 behaviors, labels 1:1 in desirable/undesirable pairs, and one row
in 2,000 without a final assistant message (a reject). The text is drawn from word lists, not
copied from any data set. Output streams in constant memory; the same --rows and --seed give
the same bytes.

  ktoloader gen --rows 1000000 --out /tmp/big.jsonl
  ktoloader gen --rows 1000 | ktoloader prep --input - --out shards`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.rows < 0 {
				return usagef("--rows must not be negative")
			}
			if f.out == "" || f.out == "-" {
				w := bufio.NewWriterSize(cmd.OutOrStdout(), 1<<20)
				if err := gen.Write(w, f.rows, f.seed); err != nil {
					return err
				}
				return w.Flush()
			}
			// A file is written under a temporary name and renamed when complete.
			af, err := export.CreateAtomic(f.out)
			if err != nil {
				return err
			}
			defer af.Abort()
			w := bufio.NewWriterSize(af, 1<<20)
			if err := gen.Write(w, f.rows, f.seed); err != nil {
				return err
			}
			if err := w.Flush(); err != nil {
				return err
			}
			return af.Commit()
		},
	}
	cmd.Flags().Int64Var(&f.rows, "rows", 1000, "number of rows")
	cmd.Flags().Uint64Var(&f.seed, "seed", 1, "seed: the same seed gives the same rows")
	cmd.Flags().StringVarP(&f.out, "out", "o", "-", "output file, or - for stdout")
	return cmd
}
