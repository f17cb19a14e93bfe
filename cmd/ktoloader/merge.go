package main

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/internal/outdir"
	"github.com/ktoloader/ktoloader/internal/pipeline"
)

// mergeFlags are merge's flag values.
type mergeFlags struct {
	out      string
	force    bool
	copyOnly bool
	noVerify bool
	asJSON   bool
}

func newMergeCmd() *cobra.Command {
	var f mergeFlags
	cmd := &cobra.Command{
		Use:   "merge OUT_0 OUT_1 … --out MERGED",
		Short: "Combine the outputs of a sharded prep (--num-shards N) into one data set",
		Long: `merge combines the N output directories of a sharded run (prep --num-shards N
--shard-index 0 … N-1, e.g. an array job) into one output directory that reads, trains and
verifies like a single run's:

  - sft/ shards are hard-linked (or copied, with --copy or across file systems) under names
    numbered across the inputs (sft/train-00003-of-00016.parquet);
  - kto/ and kto_packed/ are rewritten so that batch_index counts the batches of the whole
    set: every input's full batches in shard order, then the inputs' last, partial batches
    planned again together, so only the merged set's last batch may be partial;
  - manifest.json sums the counts, recomputes token, batch and packing statistics, merges
    the split statistics; rejects.jsonl is the inputs' rejects in shard order.

The inputs must be the shards of one run: the same input files, tokenizer and flags, each
shard index once. The result is verified (as ktoloader verify does) unless --no-verify; a
result that fails verification loses its manifest, so it never looks finished.

Exit 0 on success, 1 when merging or verification failed, 2 on a usage error (including
inputs that are not the shards of one run).`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, dirs []string) error {
			if f.out == "" {
				return usagef("--out is required")
			}
			d, err := outdir.Open(f.out, outdir.Options{Force: f.force})
			if err != nil {
				return err
			}
			defer d.Close() // held through verification
			m, err := pipeline.Merge(pipeline.MergeConfig{Inputs: dirs, Out: f.out, Force: f.force, Copy: f.copyOnly, Dir: d})
			if err != nil {
				if errors.Is(err, pipeline.ErrNotShards) || errors.Is(err, export.ErrOutputExists) ||
					errors.Is(err, export.ErrNoManifest) {
					return usageError{err}
				}
				return err
			}
			printWarnings(cmd.ErrOrStderr(), m.Warnings)
			w := cmd.OutOrStdout()
			verdict := "not verified (--no-verify)"
			if !f.noVerify {
				rep, err := export.Verify(f.out)
				if err == nil && !rep.OK() {
					for _, v := range rep.Violations {
						fmt.Fprintln(cmd.ErrOrStderr(), v)
					}
					err = fmt.Errorf("the merged output fails verification: %d violations", len(rep.Violations)+rep.Omitted)
				}
				if err != nil {
					if rerr := d.RemoveRun(m); rerr != nil {
						err = fmt.Errorf("%w (and removing the failed output: %v)", err, rerr)
					}
					return err
				}
				verdict = fmt.Sprintf("verified %d files, %d rows", rep.Files, rep.Rows)
			}
			if f.asJSON {
				b, err := m.Marshal()
				if err != nil {
					return err
				}
				_, err = w.Write(b)
				return err
			}
			c := m.Counts
			fmt.Fprintf(w, "merged %d shards → %s: rows read %d, written %d, rejected %d; %d files, %s\n",
				len(dirs), filepath.Clean(f.out), c.Read, c.Written, c.Rejected, len(m.Files), verdict)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.out, "out", "o", "", "output directory of the merged data set")
	fl.BoolVar(&f.force, "force", false, "overwrite a directory that holds a finished run")
	fl.BoolVar(&f.copyOnly, "copy", false, "copy sft/ files instead of hard-linking them")
	fl.BoolVar(&f.noVerify, "no-verify", false, "skip verifying the merged output")
	fl.BoolVar(&f.asJSON, "json", false, "print the merged manifest on stdout")
	return cmd
}
