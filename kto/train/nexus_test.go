package train

import (
	"bufio"
	"bytes"
	stdcontext "context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/ktoloader/ktoloader/internal/pipeline"
	"github.com/ktoloader/ktoloader/internal/shared"
	"github.com/ktoloader/ktoloader/kto"
	"github.com/ktoloader/ktoloader/loader"
	"github.com/ktoloader/ktoloader/tokenize"
)

// nexusRows is how many rows of the Nexus KTO file TestLoRANexus prepares: five KTO batches
// of two, so that 20 steps are four passes over the same batches (steps 1–5 and 16–20
// see the same data) and the run stays well under a minute on two cores.
const nexusRows = 10

// TestLoRANexus: 20 LoRA steps on shards prep made from the real Nexus file with the real
// Mistral tokenizer (ids up to 32768, real prompt/completion lengths, packing, KL pairs),
// on a random Mistral-shaped model built from a config.json alone, lower the loss and leave
// every base tensor bit-identical.
func TestLoRANexus(t *testing.T) {
	if testing.Short() {
		t.Skip("trains a model")
	}
	src := shared.Path(t, "data", "nexus", "behavior_merged_kto_v1.5_balanced.jsonl")
	tok, err := tokenize.Load(shared.Path(t, "tokenizers", "mistral-7b-v0.3"))
	if err != nil {
		t.Fatal(err)
	}
	// The first rows of the file (labels alternate there), copied to a temporary file.
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	var head bytes.Buffer
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<24)
	for n := 0; n < nexusRows && sc.Scan(); n++ {
		head.Write(sc.Bytes())
		head.WriteByte('\n')
	}
	f.Close()
	tmp := t.TempDir()
	input := filepath.Join(tmp, "nexus-head.jsonl")
	if err := os.WriteFile(input, head.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(tmp, "data")
	m, err := pipeline.Run(pipeline.Config{
		Inputs:    []pipeline.Input{{Name: "nexus-head.jsonl", Open: func(c loader.Config) (*loader.Reader, error) { return loader.Open(input, c) }}},
		Tokenizer: tok, TokKind: "path", TokSource: "mistral-7b-v0.3", Out: data, Workers: 2,
		KTO: kto.Config{BatchSize: 2, MaxLen: 384, Truncate: kto.TruncateKeepEnd, Seed: 42},
	})
	if err != nil {
		t.Fatal(err)
	}
	if m.Counts.Written < nexusRows-2 || m.Tokenizer.VocabSize != 32768 {
		t.Fatalf("prep wrote %d of %d rows, vocab %d", m.Counts.Written, nexusRows, m.Tokenizer.VocabSize)
	}

	// A Mistral in Hugging Face layout from config.json alone: random weights.
	model := filepath.Join(tmp, "model")
	cfg := ModelConfig{VocabSize: 32768, HiddenSize: 16, IntermediateSize: 32, NumHiddenLayers: 1,
		NumAttentionHeads: 2, NumKeyValueHeads: 1, RMSNormEps: 1e-5, RopeTheta: 1e6,
		MaxPositionEmbeddings: 1024, InitializerRange: 0.02}
	js := map[string]any{}
	raw, _ := json.Marshal(cfg)
	_ = json.Unmarshal(raw, &js)
	js["architectures"], js["model_type"], js["hidden_act"] = []string{"MistralForCausalLM"}, "mistral", "silu"
	raw, _ = json.MarshalIndent(js, "", "  ")
	if err := os.MkdirAll(model, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(model, "config.json"), raw, 0o644); err != nil {
		t.Fatal(err)
	}

	var steps []StepMetrics
	s := &runState{status: func(string) {}, opts: Options{DataDir: data, Model: model, Backend: "go",
		LoRA: LoRAConfig{Rank: 8, Alpha: 16}, LearningRate: 5e-3, Steps: 20, Scheduler: SchedulerConstant, NoEval: true,
		OnStep: func(m StepMetrics) { steps = append(steps, m) }}}
	base := map[string][]byte{}
	if err := catchPanic(func() {
		if err := s.setup(); err != nil {
			t.Fatal(err)
		}
		if s.src.Weights || s.model.VocabSize != 32768 {
			t.Fatalf("model source %+v, want random weights of vocab 32768", s.src)
		}
		for _, spec := range s.model.variables() {
			v := s.ctx.InAbsPath(spec.scope).GetVariable(weightName)
			base[spec.scope] = float32Bytes(tensors.MustCopyFlatData[float32](v.MustValue()))
		}
		if _, err := s.loop(stdcontext.Background()); err != nil {
			t.Fatal(err)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if len(steps) != 20 {
		t.Fatalf("%d steps, want 20", len(steps))
	}
	first, last := meanOf(steps[:5], func(m StepMetrics) float64 { return m.Loss }), meanOf(steps[15:], func(m StepMetrics) float64 { return m.Loss })
	t.Logf("loss: mean of steps 1-5 %.4f, of steps 16-20 %.4f", first, last)
	if !(last < first) {
		t.Errorf("loss did not go down on real shards: %.4f → %.4f", first, last)
	}
	for _, spec := range s.model.variables() {
		v := s.ctx.InAbsPath(spec.scope).GetVariable(weightName)
		if v.Trainable {
			t.Errorf("%s is trainable in a LoRA run", spec.scope)
		}
		if got := float32Bytes(tensors.MustCopyFlatData[float32](v.MustValue())); !bytes.Equal(got, base[spec.scope]) {
			t.Errorf("base tensor %s changed during LoRA training", hfName(spec.scope))
		}
	}
}
