package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/internal/outdir"
	"github.com/ktoloader/ktoloader/kto/train"
)

// scoreFlags are score's flag values.
type scoreFlags struct {
	o      train.ScoreOptions
	split  string
	seed   int64
	asJSON bool
	out    string
}

func newScoreCmd() *cobra.Command {
	var f scoreFlags
	cmd := &cobra.Command{
		Use:   "score --data DIR --model M [--adapter DIR] [--split S] [--json | --out FILE]",
		Short: "Completion log-probs of every example of a split (and of its KL pair) under a model",
		Long: `score runs the model (plus a PEFT adapter, when given) over DIR/kto_packed/{split}-*.parquet
and gives, per example, the summed log-prob of its completion and of its KL pair: rows
{batch_index, segment_example, kl, logp}, the columns of DIR/ref_logps/. Use it to score a
trained adapter on the test split, or to compute reference log-probs once on a GPU box.

--model and --dtype mean what they mean for train (a directory with safetensors, a repo id,
a config.json for random weights from --seed, or tiny). Output: --out FILE writes Parquet
(ref_logps schema), --json (default when no --out) one JSON object per row on stdout.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.o.DataDir == "" {
				return usagef("score: --data DIR is required")
			}
			if f.seed <= 0 {
				return usagef("score: --seed must be > 0")
			}
			lock, err := outdir.LockShared(f.o.DataDir) // as train: no prep replaces the data meanwhile
			if err != nil {
				return err
			}
			defer lock.Release()
			if f.out != "" {
				// Never over the data it reads (a shard, the manifest); another existing
				// file is a previous score's, replaced atomically.
				data := []string{filepath.Join(f.o.DataDir, export.ManifestName)}
				if m, err := export.ReadManifest(f.o.DataDir); err == nil {
					for _, file := range m.Files {
						data = append(data, filepath.Join(f.o.DataDir, filepath.FromSlash(file.Path)))
					}
				}
				if err := outdir.CheckFile("--out", f.out, data, func(string) bool { return true }); err != nil {
					return err
				}
			}
			f.o.Split, f.o.Seed = train.Split(f.split), uint64(f.seed)
			f.o.OnStatus = func(s string) { fmt.Fprintln(cmd.ErrOrStderr(), "score:", s) }
			rows, err := train.Score(f.o)
			if err != nil {
				if isUsage(err) {
					return usageError{fmt.Errorf("score: %w", err)}
				}
				return fmt.Errorf("score: %w", err)
			}
			if f.out != "" {
				if err := train.WriteRefRows(f.out, rows); err != nil {
					return fmt.Errorf("score: %w", err)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "score: %d rows written to %s\n", len(rows), f.out)
				if !f.asJSON {
					return nil
				}
			}
			w := bufio.NewWriter(cmd.OutOrStdout())
			enc := json.NewEncoder(w)
			for _, r := range rows {
				if err := enc.Encode(map[string]any{"batch_index": r.BatchIndex, "segment_example": r.SegmentExample, "kl": r.KL, "logp": r.LogP}); err != nil {
					return err
				}
			}
			return w.Flush()
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.o.DataDir, "data", "", "prep output directory holding kto_packed/ (required)")
	fl.StringVar(&f.o.Model, "model", train.TinyPreset, "model: directory, repo id, config.json or tiny (as for train)")
	fl.StringVar(&f.o.Adapter, "adapter", "", "PEFT adapter directory to apply")
	fl.StringVar(&f.split, "split", string(train.SplitTrain), `"train" or "test"`)
	fl.StringVar(&f.o.DType, "dtype", train.DTypeFloat32, `"float32" or "bfloat16"`)
	fl.StringVar(&f.o.Backend, "backend", "", `GomlX backend (as for train)`)
	fl.BoolVar(&f.o.Offline, "offline", false, "never download a repo id's files")
	fl.Int64Var(&f.seed, "seed", train.DefaultSeed, "seed of random weights (a model without safetensors)")
	fl.BoolVar(&f.asJSON, "json", false, "JSON lines on stdout (the default without --out)")
	fl.StringVar(&f.out, "out", "", "write Parquet rows (ref_logps schema) to FILE")
	return cmd
}

// isUsage reports errors that are the caller's to fix (exit 2).
func isUsage(err error) bool {
	return errors.Is(err, train.ErrBadOption)
}
