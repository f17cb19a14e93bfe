package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ktoloader/ktoloader/internal/safetensors"
	"github.com/ktoloader/ktoloader/internal/shared"
	"github.com/ktoloader/ktoloader/kto/train"
)

const genModelConfig = `{"architectures": ["MistralForCausalLM"], "hidden_size": 32, "intermediate_size": 64,
 "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
 "vocab_size": 300, "max_position_embeddings": 512, "rms_norm_eps": 1e-05,
 "rope_theta": 10000.0, "tie_word_embeddings": false, "initializer_range": 0.02}`

// TestGenModelCLI: gen-model writes a loadable HF directory (sharded past --max-shard-size),
// the same bytes for a seed, and refuses bad flags with exit 2.
func TestGenModelCLI(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.json")
	if err := os.WriteFile(cfg, []byte(genModelConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, out := range []string{a, b} {
		if code, _ := runCLI(t, "gen-model", "--config", dir, "--out", out, "--dtype", "bfloat16", "--seed", "4", "--max-shard-size", "20KB"); code != 0 {
			t.Fatalf("gen-model exit %d", code)
		}
	}
	d, err := safetensors.OpenDir(a)
	if err != nil {
		t.Fatal(err)
	}
	names := d.Names()
	info, _, ok := d.Info("model.layers.1.mlp.down_proj.weight")
	d.Close()
	// 2 layers × 9 tensors, embedding, final norm, lm_head.
	if len(names) != 21 || !ok || info.DType != safetensors.BF16 || info.Shape[0] != 32 || info.Shape[1] != 64 {
		t.Fatalf("%d tensors; down_proj %+v (found %v)", len(names), info, ok)
	}
	files, _ := filepath.Glob(filepath.Join(a, "*"))
	if len(files) < 4 { // config, index, ≥ 2 shards
		t.Fatalf("not sharded: %v", files)
	}
	for _, f := range files {
		x, _ := os.ReadFile(f)
		y, err := os.ReadFile(filepath.Join(b, filepath.Base(f)))
		if err != nil || !bytes.Equal(x, y) {
			t.Errorf("%s differs between two runs with one seed", filepath.Base(f))
		}
	}
	if c, err := train.LoadModelConfig(filepath.Join(a, "config.json")); err != nil || c.HiddenSize != 32 {
		t.Errorf("written config.json: %+v, %v", c, err)
	}
	for _, args := range [][]string{
		{"gen-model", "--out", a},
		{"gen-model", "--config", cfg, "--out", a, "--dtype", "float16"},
		{"gen-model", "--config", cfg, "--out", a, "--seed", "0"},
		{"gen-model", "--config", filepath.Join(dir, "missing.json"), "--out", a},
	} {
		if code, _ := runCLI(t, args...); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
}

// TestTrainPlanCLI: train --plan on Mistral-7B-v0.3's config prints the counts, and
// --micro-batch / --recompute reach the plan.
func TestTrainPlanCLI(t *testing.T) {
	model := shared.Path(t, "models", "mistral-7b-v0.3")
	code, out := runCLI(t, "train", "--plan", "--model", model, "--lora-r", "16", "--dtype", "bfloat16")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, s := range []string{"7,248,023,552 base", "41,943,040 adapter", "does NOT fit", "suggested setting that fits", "verdict: fits"} {
		if !strings.Contains(out, s) {
			t.Errorf("plan lacks %q:\n%s", s, out)
		}
	}
	code, out = runCLI(t, "train", "--plan", "--model", model, "--lora-r", "16", "--dtype", "bfloat16", "--micro-batch", "1", "--recompute")
	if code != 0 || !strings.Contains(out, "micro-batch 1 rows (8 passes") || !strings.Contains(out, "recompute true") ||
		!strings.Contains(out, "verdict: fits") || strings.Contains(out, "suggested") {
		t.Errorf("exit %d; plan with --micro-batch 1 --recompute:\n%s", code, out)
	}
}
