package train

import (
	stdcontext "context"
	"math"
	"path/filepath"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/ktoloader/ktoloader/internal/safetensors"
)

// trainedWeightsFixed is trainedWeights with every batch (and micro-batch) padded to the
// largest scanned one, as on XLA (setup scans only for backends other than the CPU's).
func trainedWeightsFixed(t *testing.T, o Options) (map[string][]float32, []StepMetrics) {
	t.Helper()
	var steps []StepMetrics
	o.Backend = "go"
	o.OnStep = func(m StepMetrics) { steps = append(steps, m) }
	s := &runState{opts: o, status: func(string) {}}
	if err := catchPanic(func() {
		if err := s.setup(); err != nil {
			t.Fatal(err)
		}
		if err := s.scanLayouts(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.loop(stdcontext.Background()); err != nil {
			t.Fatal(err)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if s.fixedMicroDims == nil || (o.MicroBatch > 0 && s.fixedMicroDims.Target.Blocks == 0) {
		t.Fatalf("no micro-batch layout scanned: %+v", s.fixedMicroDims)
	}
	out := map[string][]float32{}
	for v := range s.ctx.IterVariables() {
		if v.Trainable {
			out[v.ScopeAndName()] = tensors.MustCopyFlatData[float32](v.MustValue())
		}
	}
	return out, steps
}

// trainedWeights runs o and returns every trainable variable's final value by scope/name,
// with the per-step metrics.
func trainedWeights(t *testing.T, o Options) (map[string][]float32, []StepMetrics) {
	t.Helper()
	s, steps := trainLoRA(t, o)
	out := map[string][]float32{}
	for v := range s.ctx.IterVariables() {
		if v.Trainable {
			out[v.ScopeAndName()] = tensors.MustCopyFlatData[float32](v.MustValue())
		}
	}
	return out, steps
}

// compareRuns checks that run b took the same steps as run a: metrics and updated weights
// within float32 rounding of a different summation order.
func compareRuns(t *testing.T, what string, lr float64, wa, wb map[string][]float32, sa, sb []StepMetrics) {
	t.Helper()
	if len(sa) != len(sb) || len(sa) == 0 {
		t.Fatalf("%s: %d vs %d steps", what, len(sa), len(sb))
	}
	close := func(x, y float64) bool { return math.Abs(x-y) <= 2e-5+2e-5*math.Abs(x) }
	for i := range sa {
		a, b := sa[i], sb[i]
		for name, pair := range map[string][2]float64{"loss": {a.Loss, b.Loss}, "kl": {a.KL, b.KL},
			"grad_norm": {a.GradNorm, b.GradNorm}, "rewards_chosen": {deref(a.RewardsChosen), deref(b.RewardsChosen)},
			"rewards_rejected": {deref(a.RewardsRejected), deref(b.RewardsRejected)}} {
			if !close(pair[0], pair[1]) {
				t.Errorf("%s: step %d %s %.7g, want %.7g", what, i+1, name, pair[1], pair[0])
			}
		}
		if a.Tokens != b.Tokens {
			t.Errorf("%s: step %d saw %d tokens, want %d", what, i+1, b.Tokens, a.Tokens)
		}
	}
	if len(wa) != len(wb) || len(wa) == 0 {
		t.Fatalf("%s: %d vs %d trainable variables", what, len(wa), len(wb))
	}
	worst, where := 0.0, ""
	for k, x := range wa {
		y, ok := wb[k]
		if !ok || len(y) != len(x) {
			t.Fatalf("%s: variable %s missing or reshaped", what, k)
		}
		for i := range x {
			if d := math.Abs(float64(x[i] - y[i])); d > worst {
				worst, where = d, k
			}
		}
	}
	// An Adam step moves a weight by up to the learning rate whatever the gradient's size, so
	// a rounding difference in a near-zero gradient entry can show at a small fraction of it;
	// a wrong gradient (a micro-batch's own z0, a missing layer) moves weights by ~lr.
	if worst > 1e-3*lr*float64(len(sa)) {
		t.Errorf("%s: updated weights differ by up to %.3g (%s)", what, worst, where)
	}
	t.Logf("%s: %d steps, weights within %.2g, final loss %.6f", what, len(sa), worst, sb[len(sb)-1].Loss)
}

// TestMicroBatchAndRecomputeEqualWholeStep: on the tiny preset (full fine-tuning, so the
// embedding, head and norms are trained too) a step made of micro-batches, with or without
// per-layer recomputation, the chunked LM head and gradient accumulation, takes the same steps as the
// single-graph step: losses, z0 (whole-batch KL), rewards, gradient norms and updated weights.
// The single-graph step itself is checked against TRL's loss (loss_test.go), the float64
// forward (model_test.go) and finite differences (realmodel_test.go).
func TestMicroBatchAndRecomputeEqualWholeStep(t *testing.T) {
	if testing.Short() {
		t.Skip("trains a model")
	}
	dir := writeSynData(t, 6, 0)
	// The graph's head throughout: these are re-arrangements of the single graph.
	base := Options{DataDir: dir, Steps: 3, NoEval: true, Ref: RefOnTheFly, HostHead: HostHeadOff}
	wantW, wantS := trainedWeights(t, base)
	for _, c := range []struct {
		name      string
		micro     int
		recompute bool
		headChunk int
	}{
		{"micro-batch 1", 1, false, 0},
		{"micro-batch 3 (3+1 of 4)", 3, false, 0},
		{"recompute", 0, true, 0},
		{"micro-batch 2 + recompute", 2, true, 0},
		{"head chunks of 7 (of 32 ids)", 0, false, 7},
		{"micro-batch 2 + recompute + head chunks of 5", 2, true, 5},
	} {
		o := base
		o.MicroBatch, o.Recompute, o.HeadChunk = c.micro, c.recompute, c.headChunk
		w, s := trainedWeights(t, o)
		compareRuns(t, c.name, TinyLearningRate, wantW, w, wantS, s)
	}
	// Padded to one scanned shape per kind of pass, as on XLA.
	o := base
	o.MicroBatch = 2
	w, s := trainedWeightsFixed(t, o)
	compareRuns(t, "micro-batch 2, fixed layouts", TinyLearningRate, wantW, w, wantS, s)
	// Gradient accumulation over 2 KTO batches, each in micro-batches.
	o = base
	o.GradAccum = 2
	wantW, wantS = trainedWeights(t, o)
	o.MicroBatch = 1
	w, s = trainedWeights(t, o)
	compareRuns(t, "grad-accum 2 × micro-batch 1", TinyLearningRate, wantW, w, wantS, s)
}

// TestLoRAMicroRecomputeEqual: the same on a LoRA run of a pretrained-layout model (only
// layer variables trainable: the recomputed backward supplies every gradient).
func TestLoRAMicroRecomputeEqual(t *testing.T) {
	if testing.Short() {
		t.Skip("trains a model")
	}
	data := writeSynData(t, 4, 0)
	model := filepath.Join(t.TempDir(), "model")
	writeHFModel(t, model, hfTestConfig(), safetensors.F32, 1<<30, 9)
	base := Options{DataDir: data, Model: model, LoRA: LoRAConfig{Rank: 4, Alpha: 8}, LearningRate: 5e-3,
		Steps: 3, NoEval: true, Ref: RefOnTheFly, HostHead: HostHeadOff}
	wantW, wantS := trainedWeights(t, base)
	o := base
	o.MicroBatch, o.Recompute = 1, true
	w, s := trainedWeights(t, o)
	compareRuns(t, "LoRA micro-batch 1 + recompute", base.LearningRate, wantW, w, wantS, s)
	o.MicroBatch = 0
	w, s = trainedWeights(t, o)
	compareRuns(t, "LoRA recompute", base.LearningRate, wantW, w, wantS, s)
	o.Recompute, o.HeadChunk = false, 16 // the frozen head: only the states' gradient
	w, s = trainedWeights(t, o)
	compareRuns(t, "LoRA head chunks of 16", base.LearningRate, wantW, w, wantS, s)
}

// TestRecomputeRefusesDropout: recomputed layers would draw new dropout masks.
func TestRecomputeRefusesDropout(t *testing.T) {
	o := Options{DataDir: "x", Recompute: true, LoRA: LoRAConfig{Rank: 4, Dropout: 0.1}}
	o.withDefaults()
	if err := o.Validate(); err == nil {
		t.Fatal("--recompute with LoRA dropout accepted")
	}
	o = Options{DataDir: "x", MicroBatch: -1}
	o.withDefaults()
	if err := o.Validate(); err == nil {
		t.Fatal("--micro-batch -1 accepted")
	}
}
