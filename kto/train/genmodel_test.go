package train

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/ml/context"
)

// TestWriteRandomModel: a generated directory (sharded, float32 and bfloat16) loads through
// the trainer's weight loader to exactly the values random init with the same seed gives,
// is byte-identical for a seed and different for another, and PyTorch's Mistral forward
// reads it and scores it like `score` does.
func TestWriteRandomModel(t *testing.T) {
	cfg := hfTestConfig()
	raw, _ := json.Marshal(cfg)
	for _, dt := range []struct {
		name string
		dt   dtypes.DType
	}{{DTypeFloat32, dtypes.Float32}, {DTypeBFloat16, dtypes.BFloat16}} {
		dir := filepath.Join(t.TempDir(), "model")
		// Small shards: several files and the index.
		if err := WriteRandomModel(dir, cfg, raw, dt.name, 5, 20_000); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(dir, "model.safetensors.index.json")); err != nil {
			t.Fatalf("%s: not sharded: %v", dt.name, err)
		}
		got := context.New()
		if err := cfg.LoadWeights(got, testBackend(t), dir, dt.dt); err != nil {
			t.Fatalf("%s: %v", dt.name, err)
		}
		want := context.New()
		cfg.initVariables(want, 5, dt.dt)
		n := 0
		for _, spec := range cfg.variables() {
			a := got.InAbsPath(spec.scope).GetVariable(weightName).MustValue()
			b := want.InAbsPath(spec.scope).GetVariable(weightName).MustValue()
			if a.DType() != dt.dt || !bytes.Equal(float32Bytes(weightAsFloat32(a)), float32Bytes(weightAsFloat32(b))) {
				t.Errorf("%s: %s differs from random init with the same seed (dtype %s)", dt.name, spec.scope, a.DType())
			}
			n++
		}
		if n == 0 {
			t.Fatal("no tensors compared")
		}
		again := filepath.Join(t.TempDir(), "again")
		other := filepath.Join(t.TempDir(), "other")
		if err := WriteRandomModel(again, cfg, raw, dt.name, 5, 20_000); err != nil {
			t.Fatal(err)
		}
		if err := WriteRandomModel(other, cfg, raw, dt.name, 6, 20_000); err != nil {
			t.Fatal(err)
		}
		files, _ := filepath.Glob(filepath.Join(dir, "*"))
		for _, f := range files {
			a, _ := os.ReadFile(f)
			b, _ := os.ReadFile(filepath.Join(again, filepath.Base(f)))
			c, _ := os.ReadFile(filepath.Join(other, filepath.Base(f)))
			if !bytes.Equal(a, b) {
				t.Errorf("%s: %s differs between two runs with seed 5", dt.name, filepath.Base(f))
			}
			if filepath.Ext(f) == ".safetensors" && bytes.Equal(a, c) {
				t.Errorf("%s: %s is the same for seeds 5 and 6", dt.name, filepath.Base(f))
			}
		}
	}
	if err := WriteRandomModel(t.TempDir(), cfg, raw, "float16", 5, 0); err == nil {
		t.Error("dtype float16 accepted")
	}

	// PyTorch reads the directory (safetensors shards + index, config.json) and its forward
	// agrees with the trainer's on it.
	t.Run("torch", func(t *testing.T) {
		torchRef(t)
		data := writeSynData(t, 2, 0)
		dir := filepath.Join(t.TempDir(), "model")
		if err := WriteRandomModel(dir, cfg, raw, DTypeFloat32, 7, 20_000); err != nil {
			t.Fatal(err)
		}
		seqs := splitSequences(t, data, SplitTrain)
		compareRows(t, "score vs torch on a gen-model directory", scoreRows(t, ScoreOptions{DataDir: data, Model: dir}),
			torchRows(seqs, runTorch(t, dir, "", DTypeFloat32, seqs)), 1e-4)
	})
}
