package train

import (
	stdcontext "context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/gomlx/gomlx/pkg/ml/context/initializers"
	"github.com/ktoloader/ktoloader/export"
)

// runSyn trains on dir and returns the per-step metrics and the status messages.
func runSyn(t *testing.T, opts Options) ([]StepMetrics, []string, Summary) {
	t.Helper()
	var steps []StepMetrics
	var status []string
	opts.Backend = "go"
	opts.OnStep = func(m StepMetrics) { steps = append(steps, m) }
	opts.OnStatus = func(s string) { status = append(status, s) }
	sum, err := Run(stdcontext.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return steps, status, sum
}

func deref(p *float64) float64 {
	if p == nil {
		return math.NaN()
	}
	return *p
}

func meanOf(steps []StepMetrics, f func(StepMetrics) float64) float64 {
	var s float64
	for _, m := range steps {
		s += f(m)
	}
	return s / float64(len(steps))
}

// TestTrainLearns trains the tiny model on the synthetic task: at step 1 the policy is the
// reference, so every log-ratio is 0 and the loss is exactly 1 − σ(0) = 0.5; then the loss
// falls, the reward margin grows, and nothing is NaN.
func TestTrainLearns(t *testing.T) {
	if testing.Short() {
		t.Skip("trains a model")
	}
	dir := writeSynData(t, 8, 2)
	steps, _, sum := runSyn(t, Options{DataDir: dir, Steps: 40})
	if len(steps) != 40 || sum.Steps != 40 {
		t.Fatalf("%d steps reported, summary says %d, want 40", len(steps), sum.Steps)
	}
	if steps[0].Loss != 0.5 || deref(steps[0].Margin) != 0 {
		t.Errorf("step 1: loss %v margin %v, want exactly 0.5 and 0 (policy = reference)", steps[0].Loss, deref(steps[0].Margin))
	}
	for _, m := range steps {
		for name, v := range map[string]float64{"loss": m.Loss, "kl": m.KL, "margin": deref(m.Margin), "grad_norm": m.GradNorm} {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("step %d: %s = %v", m.Step, name, v)
			}
		}
	}
	first := meanOf(steps[:5], func(m StepMetrics) float64 { return m.Loss })
	last := meanOf(steps[len(steps)-5:], func(m StepMetrics) float64 { return m.Loss })
	if last > first-0.05 {
		t.Errorf("loss did not fall: first 5 steps %.4f, last 5 %.4f", first, last)
	}
	lastMargin := meanOf(steps[len(steps)-5:], func(m StepMetrics) float64 { return deref(m.Margin) })
	if lastMargin < 0.5 {
		t.Errorf("reward margin %.4f over the last 5 steps, want > 0.5", lastMargin)
	}
	if sum.Eval == nil || deref(sum.Eval.Margin) <= 0 {
		t.Errorf("held-out margin should be positive after training: %+v", sum.Eval)
	}
	t.Logf("loss %.4f → %.4f, margin → %.4f, %.0f tokens/s", first, last, lastMargin, sum.MeanTokensPerS)
}

// TestTrainDeterministic runs twice with the same seed (identical metrics, bit for bit) and
// once with on-the-fly reference log-probs, which must give the same losses as the cached ones.
func TestTrainDeterministic(t *testing.T) {
	if testing.Short() {
		t.Skip("trains a model")
	}
	dir := writeSynData(t, 4, 0)
	a, statusA, _ := runSyn(t, Options{DataDir: dir, Steps: 4})
	b, statusB, _ := runSyn(t, Options{DataDir: dir, Steps: 4})
	c, _, _ := runSyn(t, Options{DataDir: dir, Steps: 4, Ref: RefOnTheFly})
	// The same data in a fresh directory, reference values computed as batches are used.
	lazy, statusL, _ := runSyn(t, Options{DataDir: writeSynData(t, 4, 0), Steps: 4, Ref: RefLazy})
	if !strings.Contains(strings.Join(statusL, "\n"), "as batches are first used") {
		t.Errorf("lazy run should compute the reference log-probs as it goes: %q", statusL)
	}
	for i := range a {
		if a[i].Metrics.Loss != lazy[i].Metrics.Loss || a[i].GradNorm != lazy[i].GradNorm {
			t.Errorf("step %d: precomputed and lazy references differ: %+v vs %+v", i+1, a[i].Metrics, lazy[i].Metrics)
		}
	}
	if !strings.Contains(strings.Join(statusA, "\n"), "computing reference") ||
		!strings.Contains(strings.Join(statusB, "\n"), "reusing reference") {
		t.Errorf("second run should reuse the cached reference log-probs:\nfirst %q\nsecond %q", statusA, statusB)
	}
	for i := range a {
		if a[i].Metrics.Loss != b[i].Metrics.Loss || a[i].KL != b[i].KL || deref(a[i].Margin) != deref(b[i].Margin) || a[i].GradNorm != b[i].GradNorm {
			t.Errorf("step %d differs between identical runs: %+v vs %+v", i+1, a[i].Metrics, b[i].Metrics)
		}
		if math.Abs(a[i].Loss-c[i].Loss) > 1e-6 || math.Abs(deref(a[i].Margin)-deref(c[i].Margin)) > 1e-5 {
			t.Errorf("step %d: cached reference loss %v margin %v, on-the-fly %v %v",
				i+1, a[i].Loss, deref(a[i].Margin), c[i].Loss, deref(c[i].Margin))
		}
	}
	// Another seed is another reference model: the cache must not be reused.
	_, statusD, _ := runSyn(t, Options{DataDir: dir, Steps: 1, Seed: 7})
	if !strings.Contains(strings.Join(statusD, "\n"), "computing reference") {
		t.Errorf("a new seed must recompute the reference log-probs: %q", statusD)
	}
}

// TestTrainResume stops after 3 of 6 steps (checkpointing) and resumes: steps 4–6 must
// match an uninterrupted run, which needs weights, Adam moments, step count, LR schedule
// and data position all restored. Gradient accumulation over 2 batches is on.
func TestTrainResume(t *testing.T) {
	if testing.Short() {
		t.Skip("trains a model")
	}
	dir := writeSynData(t, 5, 0)
	base := Options{DataDir: dir, Steps: 6, GradAccum: 2, WarmupSteps: 2}
	full, _, _ := runSyn(t, base)

	ckpt := filepath.Join(t.TempDir(), "ckpt")
	// The LR schedule depends on the total: run 3 steps of the 6-step run by cancelling.
	first := base
	first.CheckpointDir = ckpt
	first.Backend = "go"
	ctx, cancel := stdcontext.WithCancel(stdcontext.Background())
	defer cancel()
	n := 0
	first.OnStep = func(StepMetrics) {
		if n++; n == 3 {
			cancel()
		}
	}
	sum, err := Run(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	if !sum.Interrupted || sum.Steps != 3 {
		t.Fatalf("first run: interrupted=%v steps=%d, want true and 3", sum.Interrupted, sum.Steps)
	}

	again := base
	again.CheckpointDir = ckpt
	if _, err := Run(stdcontext.Background(), again); !errors.Is(err, ErrCheckpoint) {
		t.Fatalf("reusing a checkpoint directory without --resume: err %v, want ErrCheckpoint", err)
	}
	again.Resume = true
	rest, status, sum2 := runSyn(t, again)
	if sum2.StartStep != 3 || len(rest) != 3 {
		t.Fatalf("resumed at step %d and ran %d steps, want 3 and 3 (status %q)", sum2.StartStep, len(rest), status)
	}
	for i, m := range rest {
		want := full[3+i]
		if m.Step != want.Step || math.Abs(m.Loss-want.Loss) > 1e-6 || math.Abs(m.LR-want.LR) > 1e-12 ||
			math.Abs(m.Epoch-want.Epoch) > 1e-12 {
			t.Errorf("resumed step %d: loss %v lr %v epoch %v; uninterrupted step %d: loss %v lr %v epoch %v",
				m.Step, m.Loss, m.LR, m.Epoch, want.Step, want.Loss, want.LR, want.Epoch)
		}
	}

	other := again
	other.Seed = 99
	if _, err := Run(stdcontext.Background(), other); !errors.Is(err, ErrCheckpoint) {
		t.Errorf("resuming with another seed: err %v, want ErrCheckpoint", err)
	}
}

// TestLearningRateSchedule checks Hugging Face's get_linear_schedule_with_warmup and
// get_constant_schedule_with_warmup at hand-computed points (base 1, warmup 2, total 6).
func TestLearningRateSchedule(t *testing.T) {
	linear := []float64{0, 0.5, 1, 0.75, 0.5, 0.25}
	constant := []float64{0, 0.5, 1, 1, 1, 1}
	for i := range 6 {
		if got := learningRate(1, SchedulerLinear, i, 2, 6); math.Abs(got-linear[i]) > 1e-12 {
			t.Errorf("linear step %d: %v, want %v", i, got, linear[i])
		}
		if got := learningRate(1, SchedulerConstant, i, 2, 6); math.Abs(got-constant[i]) > 1e-12 {
			t.Errorf("constant step %d: %v, want %v", i, got, constant[i])
		}
	}
	if got := learningRate(1, SchedulerLinear, 0, 0, 4); got != 1 {
		t.Errorf("no warmup: first step lr %v, want 1", got)
	}
}

func TestBadOptions(t *testing.T) {
	dir := writeSynData(t, 2, 0)
	cases := []struct {
		name string
		opts Options
		want error
	}{
		{"no_data", Options{}, ErrBadOption},
		{"missing_dir", Options{DataDir: filepath.Join(dir, "nope")}, export.ErrNoManifest},
		{"loss_type", Options{DataDir: dir, Loss: LossConfig{Type: "dpo"}}, ErrBadOption},
		{"ref_mode", Options{DataDir: dir, Ref: "sometimes"}, ErrBadOption},
		{"resume_without_dir", Options{DataDir: dir, Resume: true}, ErrBadOption},
		{"xla_not_built", Options{DataDir: dir, Backend: "xla:cuda"}, ErrBadOption},
		{"vocab_too_small", Options{DataDir: dir, Model: writeConfig(t, `{"vocab_size": 8, "hidden_size": 16,
			"intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
			"rms_norm_eps": 1e-5, "rope_theta": 10000, "max_position_embeddings": 64}`)}, ErrBadModelConfig},
		{"sliding_window", Options{DataDir: dir, Model: writeConfig(t, `{"vocab_size": 64, "hidden_size": 16,
			"intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
			"rms_norm_eps": 1e-5, "rope_theta": 10000, "sliding_window": 8}`)}, ErrBadModelConfig},
		{"gqa_mismatch", Options{DataDir: dir, Model: writeConfig(t, `{"vocab_size": 64, "hidden_size": 16,
			"intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 3,
			"rms_norm_eps": 1e-5, "rope_theta": 10000}`)}, ErrBadModelConfig},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Run(stdcontext.Background(), tc.opts)
			if !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func writeConfig(t *testing.T, js string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, []byte(js), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestConfigModel trains one step with a model from a Hugging Face config.json (a directory
// holding it), grouped-query attention with one KV head.
func TestConfigModel(t *testing.T) {
	dir := writeSynData(t, 2, 0)
	cfgPath := writeConfig(t, `{"architectures": ["MistralForCausalLM"], "vocab_size": 40, "hidden_size": 32,
		"intermediate_size": 48, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 1,
		"rms_norm_eps": 1e-5, "rope_theta": 1000000.0, "max_position_embeddings": 32768, "sliding_window": null,
		"tie_word_embeddings": false, "torch_dtype": "bfloat16"}`)
	steps, _, sum := runSyn(t, Options{DataDir: dir, Model: filepath.Dir(cfgPath), Steps: 1})
	if len(steps) != 1 || sum.Model.VocabSize != 40 || sum.Model.NumKeyValueHeads != 1 {
		t.Fatalf("steps %d, model %+v", len(steps), sum.Model)
	}
	if sum.LearningRate != DefaultLearningRate {
		t.Errorf("a config.json model defaults to TRL's learning rate %v, got %v", DefaultLearningRate, sum.LearningRate)
	}
	if sum.Parameters != sum.Model.NumParameters() || sum.Parameters != 40*32*2+32+1*(2*32+32*32*2+32*8*2+3*32*48) {
		t.Errorf("parameters %d", sum.Parameters)
	}
}

// BenchmarkTrainStep times optimizer steps of the tiny model on fixed synthetic batches: rows
// of 512 tokens, KTO batches of 8, prompts of 100–300 tokens, completions of 20–80 (as the
// demo data), with a 4096-id vocabulary and with Mistral's 32768 (the LM head then dominates),
// with the head on the host (the CPU default), in the graph, and the graph's chunked head.
// The backend is $GOMLX_BACKEND, else "go". It reports
// tokens/s (the figure `train` prints), wall-clock s/step and the process's CPU seconds per
// step, which a machine shared with other work disturbs less. The first step (compilation)
// is left out.
func BenchmarkTrainStep(b *testing.B) {
	for _, c := range []struct {
		name      string
		vocab     int
		headChunk int
		hostHead  string
	}{
		{"vocab4096", 4096, 0, HostHeadAuto}, {"vocab32768", 32768, 0, HostHeadAuto},
		{"vocab32768_graph_head", 32768, 0, HostHeadOff}, {"vocab32768_head_chunk8192", 32768, 8192, HostHeadAuto},
	} {
		b.Run(c.name, func(b *testing.B) {
			spec := synSpec{maxLen: 512, batch: 8, vocab: c.vocab, promptMin: 100, promptSpan: 200, complMin: 20, complSpan: 60}
			benchmarkTrain(b, writeSynDataSpec(b, 4, 0, spec), Options{HeadChunk: c.headChunk, HostHead: c.hostHead})
		})
	}
}

func benchmarkTrain(b *testing.B, dir string, opts Options) {
	var tokens int
	var seconds float64
	var cpu time.Duration
	steps := 0
	lastCPU := processCPU()
	opts.DataDir, opts.Steps, opts.NoEval = dir, b.N+1, true
	opts.OnStep = func(m StepMetrics) {
		now := processCPU()
		if m.Step > 1 { // the first step compiles the graphs
			tokens += m.Tokens
			seconds += float64(m.Tokens) / m.TokensPerS
			cpu += now - lastCPU
			steps++
		}
		lastCPU = now
	}
	b.ResetTimer()
	if _, err := Run(stdcontext.Background(), opts); err != nil {
		b.Fatal(err)
	}
	if steps > 0 {
		b.ReportMetric(float64(tokens)/seconds, "tokens/s")
		b.ReportMetric(seconds/float64(steps), "s/step")
		b.ReportMetric(cpu.Seconds()/float64(steps), "cpu-s/step")
	}
}

// TestRefCacheFollowsData: cached reference log-probs are reused only for the same shards
// and an intact cache file.
func TestRefCacheFollowsData(t *testing.T) {
	if testing.Short() {
		t.Skip("trains a model")
	}
	dir := writeSynData(t, 3, 0)
	computed := func(opts Options) bool {
		_, status, _ := runSyn(t, opts)
		return strings.Contains(strings.Join(status, "\n"), "computing reference")
	}
	opts := Options{DataDir: dir, Steps: 1}
	if !computed(opts) || computed(opts) {
		t.Fatal("first run should compute the reference log-probs, the second reuse them")
	}
	// A changed shard (same name and manifest) invalidates the cache.
	files, _ := ShardFiles(dir, SplitTrain)
	rows := readShard(t, files[0])
	rows[0].InputIDs[1] = (rows[0].InputIDs[1] + 1) % synVocab
	writeShard(t, files[0], rows)
	writeSynManifest(t, dir, synDefault) // the new shard is this run's: its checksum in the manifest
	if !computed(opts) {
		t.Error("a changed shard must invalidate the cached reference log-probs")
	}
	// So does a damaged cache file.
	pq, _ := refPaths(dir, SplitTrain)
	if err := os.WriteFile(pq, []byte("not parquet"), 0o644); err != nil {
		t.Fatal(err)
	}
	if !computed(opts) {
		t.Error("a damaged cache file must be recomputed")
	}
}

// TestShapedExecRebuild runs a graph that creates a variable on its first build (as the
// optimizer does) under a cache of one graph: every new shape rebuilds the exec, which must
// reuse the variable, not fail to create it again or reset it.
func TestShapedExecRebuild(t *testing.T) {
	defer func(n int) { maxGraphsPerExec = n }(maxGraphsPerExec)
	maxGraphsPerExec = 1
	ctx := context.New()
	e := newShapedExec(testBackend(t), ctx, func(ctx *context.Context, in []*graph.Node) []*graph.Node {
		v := ctx.WithInitializer(initializers.Zero).VariableWithShape("runs", shapes.Make(dtypes.Float32))
		v.SetValueGraph(graph.OnePlus(v.ValueGraph(in[0].Graph())))
		return []*graph.Node{graph.ReduceAllSum(in[0])}
	})
	sizes := []int{2, 3, 3, 2, 5}
	for _, n := range sizes {
		x := make([]float32, n)
		for i := range x {
			x[i] = 1
		}
		out, err := e.run(layoutDims{Target: groupDims{Blocks: n}}, []any{x})
		if err != nil {
			t.Fatal(err)
		}
		if got := tensors.ToScalar[float32](out[0]); got != float32(n) {
			t.Errorf("sum of %d ones = %v", n, got)
		}
	}
	if e.builds != 4 {
		t.Errorf("%d execs built, want 4 (one per change of shape)", e.builds)
	}
	v := ctx.GetVariableByScopeAndName("/", "runs")
	if v == nil || tensors.ToScalar[float32](v.MustValue()) != float32(len(sizes)) {
		t.Errorf("variable after %d runs: %v", len(sizes), v)
	}
	e.finalize()
}

func TestBackendConfig(t *testing.T) {
	for in, want := range map[string]string{
		"":                    "go:parallelism=-1,ops_parallel",
		"go":                  "go:parallelism=-1,ops_parallel",
		"go:dotgeneral_small": "go:dotgeneral_small,parallelism=-1,ops_parallel",
		"go:parallelism=2":    "go:parallelism=2,ops_sequential",
		"go:ops_parallel":     "go:ops_parallel",
		"go:ops_sequential":   "go:ops_sequential",
		"xla:cuda":            "xla:cuda",
	} {
		if got := backendConfig(in); got != want {
			t.Errorf("backendConfig(%q) = %q, want %q", in, got, want)
		}
	}
}
