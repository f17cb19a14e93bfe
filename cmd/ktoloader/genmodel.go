package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/ktoloader/ktoloader/kto/train"
)

// gen-model writes a random-init model in Hugging Face's layout from a config.json, so that
// a GPU box can run a 7B-shaped model without downloading weights (bench/gpu_train.sh).
type genModelFlags struct {
	config, out, dtype, shardSize string
	seed                          int64
}

func newGenModelCmd() *cobra.Command {
	var f genModelFlags
	cmd := &cobra.Command{
		Use:   "gen-model --config CONFIG --out DIR [--dtype float32|bfloat16] [--seed S]",
		Short: "Write a random-init Hugging Face model directory (config.json + safetensors) from a config.json",
		Long: `gen-model writes DIR/config.json and random weights for the Mistral-architecture config CONFIG
(a config.json or a directory holding one) in Hugging Face's layout: model.safetensors, or
model-0000N-of-0000M.safetensors shards with model.safetensors.index.json past
--max-shard-size. Matrices are drawn from N(0, initializer_range²) with one generator per
tensor seeded by (--seed, tensor), norm scales are 1: the weights train --model CONFIG --seed S
starts from, rounded to --dtype. Tensors are drawn while they are written (a 7B model is never
held in memory); the same config, dtype and seed give the same bytes. Files are written
atomically; weight files of an earlier save in DIR are replaced.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runGenModel(cmd, &f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.config, "config", "", "model config.json, or a directory holding one (required)")
	fl.StringVar(&f.out, "out", "", "output model directory (required)")
	fl.StringVar(&f.dtype, "dtype", train.DTypeBFloat16, `"float32" or "bfloat16"`)
	fl.Int64Var(&f.seed, "seed", train.DefaultSeed, "seed of the weights (> 0)")
	fl.StringVar(&f.shardSize, "max-shard-size", "5GiB", "largest shard (transformers' save_pretrained default: 5GB)")
	return cmd
}

func runGenModel(cmd *cobra.Command, f *genModelFlags) error {
	if f.config == "" || f.out == "" {
		return usagef("gen-model: --config and --out are required")
	}
	if f.seed <= 0 {
		return usagef("gen-model: --seed must be > 0")
	}
	if f.dtype != train.DTypeFloat32 && f.dtype != train.DTypeBFloat16 {
		return usagef("gen-model: --dtype %q: want %q or %q", f.dtype, train.DTypeFloat32, train.DTypeBFloat16)
	}
	shard, err := train.ParseMemory(f.shardSize)
	if err != nil || shard <= 0 {
		return usagef("gen-model: --max-shard-size %q: want a size such as 5GB or 2GiB", f.shardSize)
	}
	path := f.config
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, "config.json")
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return usageError{fmt.Errorf("gen-model: %w", err)}
	}
	cfg, err := train.LoadModelConfig(path)
	if err != nil {
		return usageError{fmt.Errorf("gen-model: %w", err)}
	}
	if err := train.WriteRandomModel(f.out, cfg, raw, f.dtype, uint64(f.seed), shard); err != nil {
		return fmt.Errorf("gen-model: %w", err)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "gen-model: %s: %d parameters, %s, seed %d\n", f.out, cfg.NumParameters(), f.dtype, f.seed)
	return nil
}
