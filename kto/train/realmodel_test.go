package train

import (
	stdcontext "context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"

	"github.com/ktoloader/ktoloader/internal/safetensors"
)

// The tests here check the real-model path against an independent reference: a PyTorch
// implementation of Hugging Face's Mistral forward and PEFT's LoRA rule
// (scripts/torch_mistral_ref.py, run with Debian's python3-torch), on a tiny random Mistral
// written in Hugging Face's layout by writeHFModel.

// hfTestConfig is a small Mistral: GQA, untied head, the synthetic data's vocabulary.
func hfTestConfig() ModelConfig {
	return ModelConfig{VocabSize: synVocab, HiddenSize: 32, IntermediateSize: 48, NumHiddenLayers: 2,
		NumAttentionHeads: 4, NumKeyValueHeads: 2, RMSNormEps: 1e-5, RopeTheta: 10000,
		MaxPositionEmbeddings: 64, InitializerRange: 0.02}
}

// writeHFModel writes config.json and random weights (matrices N(0, 0.15²), norms
// 1 + 0.2·N(0,1)) as safetensors in dtype st, sharded when shardBytes is small. Values are
// drawn here, not by InitVariables, so loading is tested on weights the trainer did not make.
func writeHFModel(t testing.TB, dir string, cfg ModelConfig, st safetensors.DType, shardBytes int64, seed uint64) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 99))
	var ts []safetensors.Tensor
	for _, spec := range cfg.variables() {
		n := 1
		for _, d := range spec.dims {
			n *= d
		}
		var buf []byte
		for range n {
			v := float32(rng.NormFloat64() * 0.15)
			if spec.ones {
				v = float32(1 + 0.2*rng.NormFloat64())
			}
			if st == safetensors.BF16 {
				buf = binary.LittleEndian.AppendUint16(buf, safetensors.BF16FromFloat32(v))
			} else {
				buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
			}
		}
		ts = append(ts, safetensors.Tensor{Name: hfName(spec.scope), DType: st, Shape: spec.dims, Data: buf})
	}
	if _, err := safetensors.WriteDir(dir, ts, shardBytes, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	data, _ := json.Marshal(cfg)
	_ = json.Unmarshal(data, &m)
	m["architectures"] = []string{"MistralForCausalLM"}
	m["model_type"] = "mistral"
	m["hidden_act"] = "silu"
	m["sliding_window"] = nil
	m["torch_dtype"] = map[safetensors.DType]string{safetensors.F32: "float32", safetensors.BF16: "bfloat16"}[st]
	data, _ = json.MarshalIndent(m, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "config.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// torchRef returns the python interpreter and script of the PyTorch reference, or skips.
func torchRef(t testing.TB) (python, script string) {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	script = filepath.Join(filepath.Dir(file), "..", "..", "scripts", "torch_mistral_ref.py")
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		if exec.Command(py, "-c", "import torch").Run() == nil {
			return py, script
		}
	}
	t.Skip("PyTorch not installed (Debian python3-torch + libopenblas0-pthread; .ci/run installs them): skipping the torch reference comparison")
	return "", ""
}

// torchSeq is one unpadded sequence for the reference, keyed like a ref_logps row.
type torchSeq struct {
	InputIDs []int32 `json:"input_ids"`
	LossMask []int   `json:"loss_mask"`
	key      refKey
}

// splitSequences lists every target and KL sequence of a split's packed rows.
func splitSequences(t testing.TB, dataDir string, split Split) []torchSeq {
	t.Helper()
	m, err := ReadManifest(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	files, err := ShardFiles(dataDir, split)
	if err != nil {
		t.Fatal(err)
	}
	br := NewBatchReader(files, Shape{MaxLen: m.MaxLen, BatchSize: m.BatchSize})
	defer br.Close()
	var out []torchSeq
	for {
		b, err := br.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		targets, kls := b.sequences(m.MaxLen)
		for i, group := range [][]sequence{targets, kls} {
			for _, s := range group {
				mask := make([]int, len(s.ids))
				for j, idx := range s.labelIdx {
					if s.ids[idx+1] != s.labels[j] {
						t.Fatalf("batch %d: label %d is not the next token", b.Index, j)
					}
					mask[idx+1] = 1
				}
				out = append(out, torchSeq{InputIDs: s.ids, LossMask: mask, key: refKey{b.Index, s.example, i == 1}})
			}
		}
	}
	return out
}

// runTorch scores seqs with the reference.
func runTorch(t testing.TB, model, adapter, dtype string, seqs []torchSeq) []float64 {
	t.Helper()
	python, script := torchRef(t)
	dir := t.TempDir()
	data, _ := json.Marshal(seqs)
	in, out := filepath.Join(dir, "seqs.json"), filepath.Join(dir, "out.json")
	if err := os.WriteFile(in, data, 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{script, "--model", model, "--seqs", in, "--out", out, "--dtype", dtype}
	if adapter != "" {
		args = append(args, "--adapter", adapter)
	}
	if msg, err := exec.Command(python, args...).CombinedOutput(); err != nil {
		t.Fatalf("torch reference: %v\n%s", err, msg)
	}
	var res struct {
		LogPs []float64 `json:"logps"`
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &res); err != nil || len(res.LogPs) != len(seqs) {
		t.Fatalf("torch reference output: %v (%d values for %d sequences)", err, len(res.LogPs), len(seqs))
	}
	return res.LogPs
}

// score runs Score and returns its rows by key.
func scoreRows(t testing.TB, o ScoreOptions) map[refKey]float64 {
	t.Helper()
	o.Backend = "go"
	rows, err := Score(o)
	if err != nil {
		t.Fatal(err)
	}
	out := map[refKey]float64{}
	for _, r := range rows {
		out[refKey{r.BatchIndex, r.SegmentExample, r.KL}] = r.LogP
	}
	return out
}

// compareRows asserts |a−b| ≤ rel·max(|b|, 1) for every key of want.
func compareRows(t *testing.T, what string, got map[refKey]float64, want map[refKey]float64, rel float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d rows, want %d", what, len(got), len(want))
	}
	worst := 0.0
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			t.Fatalf("%s: no row for %+v", what, k)
		}
		d := math.Abs(g-w) / math.Max(math.Abs(w), 1)
		worst = math.Max(worst, d)
		if d > rel {
			t.Errorf("%s: %+v: %.6f, want %.6f (relative %.2g > %.2g)", what, k, g, w, d, rel)
		}
	}
	t.Logf("%s: %d rows, worst relative difference %.2g", what, len(want), worst)
}

func torchRows(seqs []torchSeq, logps []float64) map[refKey]float64 {
	out := map[refKey]float64{}
	for i, s := range seqs {
		out[s.key] = logps[i]
	}
	return out
}

// TestScoreMatchesTorch: `score` on a tiny random Mistral in Hugging Face layout equals the
// PyTorch reference per example (targets and KL pairs), float32 and bfloat16, single file
// and sharded.
func TestScoreMatchesTorch(t *testing.T) {
	torchRef(t)
	data := writeSynData(t, 3, 1)
	seqs := splitSequences(t, data, SplitTrain)
	for _, tc := range []struct {
		name  string
		st    safetensors.DType
		dtype string
		shard int64
		rel   float64
	}{
		{"f32-single", safetensors.F32, DTypeFloat32, 1 << 30, 1e-4},
		{"f32-sharded", safetensors.F32, DTypeFloat32, 20_000, 1e-4},
		{"bf16-single", safetensors.BF16, DTypeBFloat16, 1 << 30, 2e-2},
		{"bf16-sharded", safetensors.BF16, DTypeBFloat16, 20_000, 2e-2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			model := filepath.Join(t.TempDir(), "model")
			writeHFModel(t, model, hfTestConfig(), tc.st, tc.shard, 5)
			if tc.shard < 1<<20 {
				if _, err := os.Stat(filepath.Join(model, "model.safetensors.index.json")); err != nil {
					t.Fatalf("expected a sharded model: %v", err)
				}
			}
			got := scoreRows(t, ScoreOptions{DataDir: data, Model: model, DType: tc.dtype})
			want := torchRows(seqs, runTorch(t, model, "", tc.dtype, seqs))
			compareRows(t, "score vs torch", got, want, tc.rel)
		})
	}
}

// trainLoRA runs a LoRA run to completion and returns its state (for the variables) and steps.
func trainLoRA(t *testing.T, o Options) (*runState, []StepMetrics) {
	t.Helper()
	var steps []StepMetrics
	o.Backend = "go"
	o.OnStep = func(m StepMetrics) { steps = append(steps, m) }
	s := &runState{opts: o, status: func(string) {}}
	if err := catchPanic(func() {
		if err := s.setup(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.loop(stdcontext.Background()); err != nil {
			t.Fatal(err)
		}
	}); err != nil {
		t.Fatal(err)
	}
	return s, steps
}

// TestLoRAZeroBIsBase: an adapter as PEFT initialises it (B = 0) scores exactly the base.
func TestLoRAZeroBIsBase(t *testing.T) {
	data := writeSynData(t, 2, 0)
	model := filepath.Join(t.TempDir(), "model")
	cfg := hfTestConfig()
	writeHFModel(t, model, cfg, safetensors.F32, 1<<30, 6)
	l := LoRAConfig{Rank: 4, Alpha: 8}.withDefaults()
	ctx := context.New()
	cfg.InitLoRA(ctx, l, 1)
	adapter := filepath.Join(t.TempDir(), "adapter")
	if err := SaveAdapter(adapter, ctx, cfg, l, model); err != nil {
		t.Fatal(err)
	}
	base := scoreRows(t, ScoreOptions{DataDir: data, Model: model})
	with := scoreRows(t, ScoreOptions{DataDir: data, Model: model, Adapter: adapter})
	for k, v := range base {
		if with[k] != v {
			t.Errorf("%+v: with a B=0 adapter %v, base %v", k, with[k], v)
		}
	}
}

// TestLoRATraining: 20 LoRA steps lower the loss and leave every base tensor bit-identical
// to the file; the saved adapter (applied by PEFT's rule in PyTorch) and the merged model
// both score like `score --adapter`.
func TestLoRATraining(t *testing.T) {
	data := writeSynData(t, 10, 1)
	model := filepath.Join(t.TempDir(), "model")
	cfg := hfTestConfig()
	writeHFModel(t, model, cfg, safetensors.F32, 1<<30, 7)
	out := t.TempDir()
	adapter, merged := filepath.Join(out, "adapter"), filepath.Join(out, "merged")
	s, steps := trainLoRA(t, Options{DataDir: data, Model: model, LoRA: LoRAConfig{Rank: 8, Alpha: 16},
		LearningRate: 5e-3, Steps: 20, Scheduler: SchedulerConstant, NoEval: true, SaveAdapter: adapter, SaveMerged: merged})
	first, last := meanOf(steps[:5], func(m StepMetrics) float64 { return m.Loss }), meanOf(steps[15:], func(m StepMetrics) float64 { return m.Loss })
	t.Logf("loss: mean of steps 1-5 %.4f, of steps 16-20 %.4f", first, last)
	if !(last < first) {
		t.Errorf("loss did not go down: %.4f → %.4f", first, last)
	}
	// Every base tensor is still the file's bytes.
	d, err := safetensors.OpenDir(model)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, spec := range cfg.variables() {
		v := s.ctx.InAbsPath(spec.scope).GetVariable(weightName)
		if v.Trainable {
			t.Errorf("%s is trainable in a LoRA run", spec.scope)
		}
		raw, _ := d.Data(hfName(spec.scope))
		got := float32Bytes(tensors.MustCopyFlatData[float32](v.MustValue()))
		if string(got) != string(raw) {
			t.Errorf("base tensor %s changed during LoRA training", hfName(spec.scope))
		}
	}
	// The adapter has PEFT's files and keys.
	lc, err := ReadAdapterConfig(adapter)
	if err != nil || lc.Rank != 8 || lc.Alpha != 16 || len(lc.Modules) != len(AllLinearTargets) {
		t.Fatalf("adapter config %+v, %v", lc, err)
	}
	f, err := safetensors.Open(filepath.Join(adapter, AdapterWeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	info, ok := f.Info("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight")
	if !ok || info.Shape[0] != cfg.HiddenSize || info.Shape[1] != 8 || f.Metadata["format"] != "pt" {
		t.Errorf("adapter tensor %+v (found %v), metadata %v", info, ok, f.Metadata)
	}
	f.Close()

	withAdapter := scoreRows(t, ScoreOptions{DataDir: data, Model: model, Adapter: adapter})
	base := scoreRows(t, ScoreOptions{DataDir: data, Model: model})
	moved := 0
	for k := range base {
		if math.Abs(base[k]-withAdapter[k]) > 1e-3 {
			moved++
		}
	}
	if moved == 0 {
		t.Fatal("the trained adapter changes no log-prob")
	}
	compareRows(t, "merged vs base+adapter", scoreRows(t, ScoreOptions{DataDir: data, Model: merged}), withAdapter, 1e-4)
	if _, err := exec.LookPath("/usr/bin/python3"); err == nil {
		if exec.Command("/usr/bin/python3", "-c", "import torch").Run() == nil {
			seqs := splitSequences(t, data, SplitTrain)
			compareRows(t, "score --adapter vs torch+PEFT", withAdapter, torchRows(seqs, runTorch(t, model, adapter, DTypeFloat32, seqs)), 1e-4)
			compareRows(t, "merged vs torch", scoreRows(t, ScoreOptions{DataDir: data, Model: merged}),
				torchRows(seqs, runTorch(t, merged, "", DTypeFloat32, seqs)), 1e-4)
		} else {
			t.Log("PyTorch not installed: torch comparison of the adapter skipped")
		}
	}
}

// TestLoRAGradientFiniteDifferences: the gradients of a LoRA A and B (with B non-zero) equal
// central finite differences of the summed log-probs.
func TestLoRAGradientFiniteDifferences(t *testing.T) {
	cfg := hfTestConfig()
	dir := filepath.Join(t.TempDir(), "model")
	writeHFModel(t, dir, cfg, safetensors.F32, 1<<30, 8)
	b := testBackend(t)
	ctx := context.New()
	if err := cfg.LoadWeights(ctx, b, dir, dtypes.Float32); err != nil {
		t.Fatal(err)
	}
	for v := range ctx.IterVariables() {
		v.SetTrainable(false)
	}
	l := LoRAConfig{Rank: 2, Alpha: 4, Modules: []string{"q_proj", "down_proj"}}
	cfg.InitLoRA(ctx, l, 3)
	rng := rand.New(rand.NewPCG(1, 2))
	for v := range ctx.IterVariables() {
		if v.Name() == loraBName {
			data := tensors.MustCopyFlatData[float32](v.MustValue())
			for i := range data {
				data[i] = float32(0.3 * rng.NormFloat64())
			}
			v.MustSetValue(tensors.FromFlatDataAndDimensions(data, v.Shape().Dimensions...))
		}
	}
	net := Net{Config: cfg, LoRA: l}
	ids := []int32{1, 5, 9, 13, 7, 22, 3, 2}
	pos := []int32{0, 1, 2, 3, 4, 5, 6, 7}
	seq := sequence{ids: ids, pos: pos, labelIdx: []int{3, 4, 5, 6}, labels: []int32{7, 22, 3, 2}, slots: []int32{0, 0, 0, 0}, target: -1}
	lossOf, gradOf := lossAndGrads(t, ctx, net, seq)
	scopes := []string{"/model/layers/0/self_attn/q_proj", "/model/layers/1/mlp/down_proj"}
	checked := 0
	for _, scope := range scopes {
		for _, name := range []string{loraAName, loraBName} {
			v := ctx.InAbsPath(scope).GetVariable(name)
			grad := gradOf(v)
			data := tensors.MustCopyFlatData[float32](v.MustValue())
			for _, i := range []int{0, len(data) / 3, len(data) - 1} {
				const h = 1e-2
				orig := data[i]
				data[i] = orig + h
				v.MustSetValue(tensors.FromFlatDataAndDimensions(data, v.Shape().Dimensions...))
				up := lossOf()
				data[i] = orig - h
				v.MustSetValue(tensors.FromFlatDataAndDimensions(data, v.Shape().Dimensions...))
				down := lossOf()
				data[i] = orig
				v.MustSetValue(tensors.FromFlatDataAndDimensions(data, v.Shape().Dimensions...))
				fd := (up - down) / (2 * h)
				if d := math.Abs(fd - float64(grad[i])); d > 2e-3+2e-2*math.Abs(fd) {
					t.Errorf("%s/%s[%d]: gradient %.5f, finite difference %.5f", scope, name, i, grad[i], fd)
				}
				checked++
			}
		}
	}
	t.Logf("%d LoRA gradient entries checked", checked)
}

// lossAndGrads returns the summed log-prob of one sequence and its gradients with respect to
// the trainable variables (the adapter).
func lossAndGrads(t *testing.T, ctx *context.Context, net Net, seq sequence) (loss func() float64, grad func(*context.Variable) []float32) {
	t.Helper()
	const bs = 4
	dims := layoutDims{needDims([]sequence{seq}, bs).rounded(), groupDims{}.rounded()}
	l := newBatchLayout([]sequence{seq}, nil, bs, dims)
	args := append(groupArgs(&l.Target), groupArgs(&l.KL)...)
	var trainable []*context.Variable
	for v := range ctx.IterVariables() {
		if v.Trainable {
			trainable = append(trainable, v)
		}
	}
	fwd := context.MustNewExec(testBackend(t), ctx.Reuse(), func(ctx *context.Context, in []*graph.Node) []*graph.Node {
		target, _ := net.TokenLogProbs(ctx, seqInputs(in[inTarget:]), seqInputs(in[inKL:]))
		return []*graph.Node{graph.ReduceAllSum(graph.Mul(target, graph.ConvertDType(graph.GreaterOrEqual(in[inTarget+inSlots], graph.ScalarZero(target.Graph(), dtypes.Int32)), dtypes.Float32)))}
	})
	gr := context.MustNewExec(testBackend(t), ctx.Reuse(), func(ctx *context.Context, in []*graph.Node) []*graph.Node {
		target, _ := net.TokenLogProbs(ctx, seqInputs(in[inTarget:]), seqInputs(in[inKL:]))
		sum := graph.ReduceAllSum(graph.Mul(target, graph.ConvertDType(graph.GreaterOrEqual(in[inTarget+inSlots], graph.ScalarZero(target.Graph(), dtypes.Int32)), dtypes.Float32)))
		return ctx.BuildTrainableVariablesGradientsGraph(sum)
	})
	loss = func() float64 { return float64(tensors.ToScalar[float32](fwd.MustExec(args...)[0])) }
	grad = func(v *context.Variable) []float32 {
		outs := gr.MustExec(args...)
		for i, tv := range trainable {
			if tv == v {
				return tensors.MustCopyFlatData[float32](outs[i])
			}
		}
		t.Fatalf("%s is not trainable", v.ScopeAndName())
		return nil
	}
	return loss, grad
}

// TestWeightErrors: every way a weights directory can be wrong is a named error (file and
// tensor), before training, and never a panic.
func TestWeightErrors(t *testing.T) {
	cfg := hfTestConfig()
	data := writeSynData(t, 1, 0)
	mk := func(t *testing.T, edit func(dir string)) string {
		dir := filepath.Join(t.TempDir(), "model")
		writeHFModel(t, dir, cfg, safetensors.F32, 1<<30, 9)
		edit(dir)
		return dir
	}
	rewrite := func(dir string, change func([]safetensors.Tensor) []safetensors.Tensor) {
		d, err := safetensors.OpenDir(dir)
		if err != nil {
			panic(err)
		}
		var ts []safetensors.Tensor
		for _, name := range d.Names() {
			info, _, _ := d.Info(name)
			raw, _ := d.Data(name)
			ts = append(ts, safetensors.Tensor{Name: name, DType: info.DType, Shape: info.Shape, Data: append([]byte(nil), raw...)})
		}
		d.Close()
		ts = change(ts)
		if err := safetensors.WriteFile(filepath.Join(dir, "model.safetensors"), ts, nil); err != nil {
			panic(err)
		}
	}
	const victim = "model.layers.1.self_attn.k_proj.weight"
	for _, tc := range []struct {
		name    string
		edit    func(dir string)
		is      error
		mention []string
	}{
		{"missing tensor", func(dir string) {
			rewrite(dir, func(ts []safetensors.Tensor) []safetensors.Tensor {
				for i := range ts {
					if ts[i].Name == victim {
						return append(ts[:i], ts[i+1:]...)
					}
				}
				return ts
			})
		}, ErrWeights, []string{victim, "missing"}},
		{"extra tensor", func(dir string) {
			rewrite(dir, func(ts []safetensors.Tensor) []safetensors.Tensor {
				return append(ts, safetensors.Tensor{Name: "model.layers.9.mlp.up_proj.weight", DType: safetensors.F32, Shape: []int{2}, Data: make([]byte, 8)})
			})
		}, ErrWeights, []string{"model.safetensors", "model.layers.9.mlp.up_proj.weight"}},
		{"misshapen tensor", func(dir string) {
			rewrite(dir, func(ts []safetensors.Tensor) []safetensors.Tensor {
				for i := range ts {
					if ts[i].Name == victim {
						ts[i].Shape = []int{ts[i].Shape[1], ts[i].Shape[0]}
					}
				}
				return ts
			})
		}, ErrWeights, []string{"model.safetensors", victim, "shape"}},
		{"unsupported dtype", func(dir string) {
			rewrite(dir, func(ts []safetensors.Tensor) []safetensors.Tensor {
				for i := range ts {
					if ts[i].Name == victim {
						ts[i].DType = safetensors.I32
					}
				}
				return ts
			})
		}, ErrWeights, []string{victim, "I32"}},
		{"truncated file", func(dir string) {
			p := filepath.Join(dir, "model.safetensors")
			st, _ := os.Stat(p)
			_ = os.Truncate(p, st.Size()-100)
		}, safetensors.ErrTruncated, []string{"model.safetensors"}},
		{"lying header", func(dir string) {
			p := filepath.Join(dir, "model.safetensors")
			raw, _ := os.ReadFile(p)
			binary.LittleEndian.PutUint64(raw, 1<<63)
			_ = os.WriteFile(p, raw, 0o644)
		}, safetensors.ErrHeader, []string{"model.safetensors"}},
		{"native consolidated only", func(dir string) {
			_ = os.Rename(filepath.Join(dir, "model.safetensors"), filepath.Join(dir, "consolidated.safetensors"))
		}, safetensors.ErrNativeFormat, []string{"consolidated.safetensors"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			model := mk(t, tc.edit)
			_, err := Run(stdcontext.Background(), Options{DataDir: data, Model: model, Backend: "go", Steps: 1, NoEval: true, LoRA: LoRAConfig{Rank: 2}})
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			for _, m := range tc.mention {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not name %q", err, m)
				}
			}
		})
	}
}
