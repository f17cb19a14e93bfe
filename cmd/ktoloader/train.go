package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/olekukonko/tablewriter"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/ktoloader/ktoloader/internal/outdir"
	"github.com/ktoloader/ktoloader/kto"
	"github.com/ktoloader/ktoloader/kto/train"
)

type trainFlags struct {
	opts         train.Options
	lossType     string
	ref          string
	clipGradNorm float64
	seed         int64
	asJSON       bool
	logPath      string
	noBar        bool
	memLimit     string
	loraTargets  string
	plan         bool
	gpuMemory    string
	planMaxLen   int
	planBatch    int
	cpuProf      string
	memProf      string
}

func newTrainCmd() *cobra.Command {
	var f trainFlags
	cmd := &cobra.Command{
		Use:   "train --data DIR [--model tiny|CONFIG] [flags]",
		Short: "Train a Mistral-architecture model with the KTO loss on prep's packed shards (GomlX)",
		Long: `train reads DIR/kto_packed/{train,test}-*.parquet (written by prep) and trains a decoder
with the Mistral architecture (RMSNorm, RoPE on position_ids, grouped-query attention,
SwiGLU, untied LM head) with TRL's KTO loss: one optimizer step per KTO batch (or
--grad-accum batches), each packed sequence attending only to itself.

The model is --model tiny (2 layers, d=64, 4 heads / 2 KV heads, vocabulary from the
manifest, random weights), a Hugging Face model directory (config.json + safetensors,
pretrained weights; config.json alone: random weights), a config.json, or a repo id
org/name[@rev] from the Hugging Face cache (downloaded unless --offline). --lora-r R trains a
PEFT-style LoRA adapter on the frozen base (the reference is the base, adapter off);
--dtype bfloat16 runs frozen weights and matrix products in bf16. --save-adapter and
--save-merged write what vLLM and transformers load. --plan prints the memory plan.

Memory: --micro-batch N runs each KTO batch's examples N at a time, gradients accumulated
before the one optimizer step (z0 stays the whole batch's: a forward-only KL pass over all
micro-batches comes first); --recompute keeps only each decoder layer's input for the
backward pass and recomputes the layer there; --head-chunk N computes the LM head's
log-softmax N vocabulary ids at a time and recomputes it in the backward pass, so no
[scored positions × vocab] logits are kept. All three give the single-graph step's results
(within float32 rounding) for about one more forward pass each.

Speed: on the CPU backend the LM head runs outside the graph (--host-head auto, the
default): AVX2/FMA kernels over vocabulary blocks, the logits never stored, between a
states graph and an update graph (the decoder's forward runs twice). It gives the graph's
results within float32 rounding; --host-head off keeps the head in the graph, and it is off
by itself with --micro-batch, --recompute, --head-chunk, LoRA dropout, bf16 or another backend
(--host-head on makes that an error).

--resume continues only the same run: it refuses checkpoints made with another model config or weights, data (manifest sha256), seed, max_len, KTO batch size, --grad-accum, --dtype, LoRA settings, --adapter or loss; an incomplete checkpoint (a kill while saving) is moved aside and the newest complete one is used.

Reference log-probs come from the frozen initial weights: --ref precomputed (default)
runs them over every batch of both splits first, caches them in DIR/ref_logps/{split}.parquet
with a JSON sidecar (reused while the manifest, shards, model, seed and shape are unchanged)
and frees the frozen weights, so training holds one model; --ref lazy fills the same cache
as batches are first used, one batch ahead on a second core (a short run on a large split
computes only what it uses, but the frozen weights stay in memory); --ref on-the-fly runs
the frozen copy for every batch, caching nothing.

Defaults follow TRL's KTOConfig and Hugging Face's Trainer: β 0.1, AdamW (0.9, 0.999, 1e-8),
no weight decay, clip at gradient norm 1, linear LR schedule. --lr defaults to 1e-6 (TRL) for
a config.json model and 1e-3 for the tiny preset, which starts from random weights. Loss
weights default to the manifest's suggestion, else 1.

Backends: --backend go (default; pure Go on the CPU) or, in a binary built with -tags xla,
xla:cuda / xla:cpu (also via $GOMLX_BACKEND). Runs on the go backend are deterministic for a
given --seed. On the go backend each batch compiles its own graph shape (milliseconds);
other backends scan the data first and pad every batch to the largest, compiling once.

Output: a progress bar on a terminal (per-step lines on stderr otherwise) and a summary table;
--json prints one JSON object per step on stdout (step, loss, rewards_chosen,
rewards_rejected, kl, margin, tokens_per_s, …) then {"summary": {…}}; --log FILE writes the
same lines to FILE. Ctrl-C stops after the current step, saving a checkpoint.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runTrain(cmd, &f) },
	}
	fl := cmd.Flags()
	o := &f.opts
	fl.StringVar(&o.DataDir, "data", "", "prep output directory holding kto_packed/ (required)")
	fl.StringVar(&o.Model, "model", train.TinyPreset, `"tiny", a Hugging Face model directory (config.json + safetensors; config.json alone: random weights), a config.json, or a repo id org/name[@rev]`)
	fl.BoolVar(&f.plan, "plan", false, "print the memory plan (weights, adapter, optimizer, activations, logits) for --model and these flags, and a micro-batch/recompute setting that fits --gpu-memory; loads no weights, needs no --data")
	fl.StringVar(&f.gpuMemory, "gpu-memory", "80GB", "device memory the plan must fit (e.g. 80GB, 141GiB)")
	fl.IntVar(&f.planMaxLen, "plan-max-len", kto.DefaultMaxLen, "row length for --plan (with --data: the manifest's)")
	fl.IntVar(&f.planBatch, "plan-batch-size", kto.DefaultBatchSize, "KTO batch for --plan (with --data: the manifest's)")
	fl.BoolVar(&o.Offline, "offline", false, "never download a repo id's files (also HF_HUB_OFFLINE=1)")
	fl.StringVar(&o.DType, "dtype", train.DTypeFloat32, `"float32" or "bfloat16": frozen weights and matrix products (trainable weights, optimizer, norms and loss stay float32)`)
	fl.IntVar(&o.LoRA.Rank, "lora-r", 0, "LoRA rank (0: full fine-tuning)")
	fl.Float64Var(&o.LoRA.Alpha, "lora-alpha", 0, "LoRA α (default: the rank, scaling 1)")
	fl.Float64Var(&o.LoRA.Dropout, "lora-dropout", 0, "LoRA dropout on the adapter's input (PEFT's lora_dropout)")
	fl.StringVar(&f.loraTargets, "lora-targets", strings.Join(train.AllLinearTargets, ","), "comma-separated linear modules that get an adapter")
	fl.BoolVar(&o.LoRA.RSLoRA, "use-rslora", false, "rank-stabilised LoRA: scaling α/√r instead of α/r")
	fl.StringVar(&o.Adapter, "adapter", "", "start from this PEFT adapter directory (adapter_config.json + adapter_model.safetensors)")
	fl.StringVar(&o.SaveAdapter, "save-adapter", "", "write the trained LoRA adapter here in PEFT's layout (loadable by PEFT and vLLM)")
	fl.StringVar(&o.SaveMerged, "save-merged", "", "write the model with the adapter merged in as a Hugging Face model directory")
	fl.StringVar(&f.lossType, "loss-type", string(train.LossKTO), `"kto" or "apo_zero_unpaired" (TRL's loss_type)`)
	fl.Float64Var(&o.Loss.Beta, "beta", train.DefaultBeta, "KTO β")
	fl.Float64Var(&o.Loss.DesirableWeight, "desirable-weight", 0, "weight of desirable losses (default: the manifest's suggestion, else 1)")
	fl.Float64Var(&o.Loss.UndesirableWeight, "undesirable-weight", 0, "weight of undesirable losses (default: the manifest's suggestion, else 1)")
	fl.Float64Var(&o.LearningRate, "lr", 0, "peak learning rate (default 1e-6, or 1e-3 for --model tiny)")
	fl.StringVar(&o.Scheduler, "lr-scheduler", train.SchedulerLinear, `"linear" (decay to 0) or "constant", after warmup`)
	fl.IntVar(&o.WarmupSteps, "warmup-steps", 0, "linear warmup steps from 0")
	fl.Float64Var(&o.WeightDecay, "weight-decay", 0, "AdamW decoupled weight decay")
	fl.Float64Var(&f.clipGradNorm, "clip-grad-norm", train.DefaultClipGradNorm, "clip the global gradient norm (0 disables)")
	fl.IntVar(&o.GradAccum, "grad-accum", 1, "KTO batches per optimizer step (gradients averaged)")
	fl.IntVar(&o.MicroBatch, "micro-batch", 0, "examples per forward/backward pass, gradients accumulated over the KTO batch (0: the whole batch in one pass; z0 stays the whole batch's)")
	fl.BoolVar(&o.Recompute, "recompute", false, "per-layer recomputation: keep only each decoder layer's input for the backward pass and recompute the layer there (~1 more forward; needs --lora-dropout 0)")
	fl.StringVar(&o.HostHead, "host-head", train.HostHeadAuto, "LM head on the host on the CPU backend: auto (where it can run), on (or an error), off (in the graph)")
	fl.IntVar(&o.HeadChunk, "head-chunk", 0, "LM head over vocabulary chunks of N ids, recomputed in the backward pass: never keeps [scored positions × vocab] logits (0: one product, kept)")
	fl.IntVar(&o.Steps, "steps", 0, "optimizer steps (default: --epochs passes over the train split)")
	fl.IntVar(&o.Epochs, "epochs", train.DefaultEpochs, "passes over the train split when --steps is 0")
	fl.Int64Var(&f.seed, "seed", train.DefaultSeed, "seed of the initial weights (and so of the reference model)")
	fl.IntVar(&o.EvalEvery, "eval-every", 0, "evaluate on the test split every N steps (always at the end)")
	fl.BoolVar(&o.NoEval, "no-eval", false, "skip evaluation")
	fl.StringVar(&o.CheckpointDir, "checkpoint-dir", "", "save GomlX checkpoints here (every --checkpoint-every steps and on exit)")
	fl.IntVar(&o.CheckpointEvery, "checkpoint-every", 0, "checkpoint every N steps (0: only on exit)")
	fl.IntVar(&o.KeepCheckpoints, "keep-checkpoints", train.DefaultKeepCheckpoints, "checkpoints to keep")
	fl.BoolVar(&o.Resume, "resume", false, "continue from the latest checkpoint in --checkpoint-dir")
	fl.StringVar(&o.Backend, "backend", "", `GomlX backend: "go" (default, or $GOMLX_BACKEND), "xla:cuda", "xla:cpu" (needs -tags xla)`)
	fl.StringVar(&f.ref, "ref", string(train.RefPrecomputed), `reference log-probs: "precomputed" (all batches first, cached), "lazy" (as batches are used, cached) or "on-the-fly"`)
	fl.BoolVar(&f.asJSON, "json", false, "one JSON object per step on stdout, then {\"summary\": …}")
	fl.StringVar(&f.logPath, "log", "", "also write the per-step JSON lines to this JSONL file")
	fl.BoolVar(&f.noBar, "no-progress", false, "no progress bar")
	fl.StringVar(&f.cpuProf, "cpuprofile", "", "write a pprof CPU profile of the run to this file")
	fl.StringVar(&f.memProf, "memprofile", "", "write a pprof heap profile (allocations included) at the end of the run to this file")
	fl.StringVar(&f.memLimit, "memory-limit", "2GiB", "soft limit for the Go heap (off: none; $GOMEMLIMIT wins), raised when the live heap (the model and optimizer state) comes close")
	return cmd
}

func runTrain(cmd *cobra.Command, f *trainFlags) error {
	o := f.opts
	if f.plan {
		return runPlan(cmd, f)
	}
	for name, v := range map[string]float64{"lr": o.LearningRate, "weight-decay": o.WeightDecay,
		"clip-grad-norm": f.clipGradNorm, "beta": o.Loss.Beta, "lora-alpha": o.LoRA.Alpha, "lora-dropout": o.LoRA.Dropout,
		"desirable-weight": o.Loss.DesirableWeight, "undesirable-weight": o.Loss.UndesirableWeight} {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return usagef("train: --%s %v: must be a finite number", name, v)
		}
	}
	if o.DataDir == "" {
		return usagef("train: --data DIR is required")
	}
	if f.seed <= 0 {
		return usagef("train: --seed must be > 0")
	}
	if o.Loss.Beta <= 0 {
		return usagef("train: --beta must be > 0")
	}
	o.Seed = uint64(f.seed)
	if o.LoRA.Rank > 0 {
		o.LoRA.Modules = splitList(f.loraTargets)
	}
	o.Loss.Type = train.LossType(f.lossType)
	o.Ref = train.RefMode(f.ref)
	o.ClipGradNorm = f.clipGradNorm
	if f.clipGradNorm <= 0 {
		o.ClipGradNorm = -1 // Options: negative disables, zero means the default
	}
	if o.GradAccum <= 0 {
		return usagef("train: --grad-accum must be ≥ 1")
	}
	// The CPU backend's tensors are Go memory, and a step frees several of [scored
	// positions, vocab] logits: with Go's default GOGC the heap grew to 7.8 GB (RSS) for the
	// 4.3M-parameter tiny model on Nexus rows, 2.2 GB under this limit, and ran faster. GOGC
	// stays as it is, so a small run stays below the limit.
	restore, err := setMemoryLimit(f.memLimit, 0)
	if err != nil {
		return err
	}
	defer restore()
	// Shared: trains on one data set may run together (their ref_logps/ cache writes are
	// atomic and checked by sha256), but no prep or merge replaces the data under them.
	lock, err := outdir.LockShared(o.DataDir)
	if err != nil {
		return err
	}
	defer lock.Release()
	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()

	var logW *bufio.Writer
	if f.logPath != "" {
		// A resumed run appends: the earlier steps' lines stay.
		flags := os.O_CREATE | os.O_WRONLY | os.O_TRUNC
		if o.Resume {
			flags = os.O_CREATE | os.O_WRONLY | os.O_APPEND
		}
		lf, err := os.OpenFile(f.logPath, flags, 0o644)
		if err != nil {
			return err
		}
		defer lf.Close()
		logW = bufio.NewWriter(lf)
		defer logW.Flush()
	}
	emit := func(v any) error {
		line, err := json.Marshal(v)
		if err != nil {
			return err
		}
		line = append(line, '\n')
		if f.asJSON {
			if _, err := stdout.Write(line); err != nil {
				return err
			}
		}
		if logW != nil {
			if _, err := logW.Write(line); err != nil {
				return err
			}
			return logW.Flush()
		}
		return nil
	}

	useBar := !f.noBar && !f.asJSON && isTerminal(stderr)
	var bar *progressbar.ProgressBar
	var emitErr error
	o.OnStatus = func(s string) {
		if bar != nil {
			_ = bar.Clear()
		}
		fmt.Fprintln(stderr, "train:", s)
	}
	o.OnStart = func(start, total int) {
		if useBar {
			bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(stderr), progressbar.OptionShowCount(),
				progressbar.OptionSetItsString("steps"), progressbar.OptionShowIts(), progressbar.OptionSetPredictTime(true),
				progressbar.OptionThrottle(100_000_000), progressbar.OptionClearOnFinish())
			_ = bar.Set(start)
		}
	}
	o.OnStep = func(m train.StepMetrics) {
		if err := emit(m); err != nil && emitErr == nil {
			emitErr = err
		}
		switch {
		case bar != nil:
			bar.Describe(fmt.Sprintf("loss %.4f margin %s kl %.3f %.0f tok/s", m.Loss, fmtOpt(m.Margin), m.KL, m.TokensPerS))
			_ = bar.Set(m.Step)
		case !f.asJSON:
			fmt.Fprintf(stderr, "step %d  loss %.4f  chosen %s  rejected %s  margin %s  kl %.4f  %.0f tok/s\n",
				m.Step, m.Loss, fmtOpt(m.RewardsChosen), fmtOpt(m.RewardsRejected), fmtOpt(m.Margin), m.KL, m.TokensPerS)
		}
		if m.Eval != nil && !f.asJSON {
			if bar != nil {
				_ = bar.Clear()
			}
			fmt.Fprintf(stderr, "eval @ step %d  loss %.4f  margin %s  kl %.4f\n", m.Step, m.Eval.Loss, fmtOpt(m.Eval.Margin), m.Eval.KL)
		}
	}

	// The first Ctrl-C stops after the current step (saving a checkpoint); once it has been
	// seen, the default handler is back, so a second one kills the process.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		stop()
	}()
	var sum train.Summary
	err = profiled(f.cpuProf, f.memProf, func() (err error) {
		sum, err = train.Run(ctx, o)
		return err
	})
	if bar != nil {
		_ = bar.Finish()
	}
	if err != nil {
		if errors.Is(err, train.ErrBadOption) || errors.Is(err, train.ErrCheckpointExists) || errors.Is(err, train.ErrCheckpointMismatch) {
			return usageError{fmt.Errorf("train: %w", err)}
		}
		return fmt.Errorf("train: %w", err)
	}
	if emitErr != nil {
		return emitErr
	}
	if err := emit(map[string]any{"summary": sum}); err != nil {
		return err
	}
	if !f.asJSON {
		printTrainSummary(stdout, sum)
	}
	if sum.Interrupted {
		return fmt.Errorf("train: interrupted after step %d", sum.Steps)
	}
	return nil
}

// isTerminal reports whether w is a terminal (for the progress bar).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// fmtOpt formats a metric that may be absent (no example of that label in the batch).
func fmtOpt(v *float64) string {
	if v == nil {
		return "-"
	}
	return strconv.FormatFloat(*v, 'f', 4, 64)
}

func printTrainSummary(w io.Writer, s train.Summary) {
	tw := tablewriter.NewWriter(w)
	tw.Header("train", "")
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', 6, 64) }
	rows := [][]string{
		{"steps", fmt.Sprintf("%d (from %d)", s.Steps, s.StartStep)},
		{"epochs", f(s.Epochs)},
		{"final loss", f(s.FinalLoss)},
		{"tokens/s (mean)", strconv.FormatFloat(s.MeanTokensPerS, 'f', 0, 64)},
		{"train time", fmt.Sprintf("%.1f s", s.TrainSeconds)},
		{"model", fmt.Sprintf("%d layers, d=%d, %d heads / %d KV, vocab %d, %d parameters",
			s.Model.NumHiddenLayers, s.Model.HiddenSize, s.Model.NumAttentionHeads, s.Model.NumKeyValueHeads,
			s.Model.VocabSize, s.Parameters)},
		{"loss", fmt.Sprintf("%s, β=%g, weights %g/%g", s.Loss.Type, s.Loss.Beta, s.Loss.DesirableWeight, s.Loss.UndesirableWeight)},
		{"learning rate", f(s.LearningRate)},
		{"backend", s.Backend + map[bool]string{true: ", LM head on the host"}[s.HostHead]},
		{"reference", string(s.Ref)},
	}
	if s.Eval != nil {
		rows = append(rows,
			[]string{"eval loss", f(s.Eval.Loss)},
			[]string{"eval rewards chosen/rejected", fmtOpt(s.Eval.RewardsChosen) + " / " + fmtOpt(s.Eval.RewardsRejected)},
			[]string{"eval margin", fmtOpt(s.Eval.Margin)},
			[]string{"eval kl", f(s.Eval.KL)})
	}
	if s.CheckpointDir != "" {
		rows = append(rows, []string{"checkpoints", s.CheckpointDir})
	}
	for _, r := range rows {
		_ = tw.Append(r)
	}
	_ = tw.Render()
}

// splitList splits a comma-separated flag value, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// runPlan prints train --plan: arithmetic on the model config, no weights allocated.
func runPlan(cmd *cobra.Command, f *trainFlags) error {
	o := f.opts
	if o.Model == "" || o.Model == train.TinyPreset {
		return usagef("train --plan: --model must name a config.json or a model directory")
	}
	path := o.Model
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, "config.json")
	}
	cfg, err := train.LoadModelConfig(path)
	if err != nil {
		return usageError{fmt.Errorf("train --plan: %w", err)}
	}
	mem, err := train.ParseMemory(f.gpuMemory)
	if err != nil {
		return usageError{fmt.Errorf("train --plan: --gpu-memory: %w", err)}
	}
	maxLen, batch := f.planMaxLen, f.planBatch
	if o.DataDir != "" {
		m, err := train.ReadManifest(o.DataDir)
		if err != nil {
			return fmt.Errorf("train --plan: %w", err)
		}
		if m.MaxLen > 0 {
			maxLen = m.MaxLen
		}
		if m.BatchSize > 0 {
			batch = m.BatchSize
		}
	}
	po := train.PlanOptions{LoRARank: o.LoRA.Rank, DType: o.DType, MaxLen: maxLen, BatchSize: batch, GPUMemory: mem,
		MicroBatch: min(o.MicroBatch, batch), Recompute: o.Recompute, LMHeadChunk: o.HeadChunk}
	if o.LoRA.Rank > 0 {
		po.LoRATargets = splitList(f.loraTargets)
	}
	p, err := train.PlanFor(cfg, po)
	if err != nil {
		return usageError{fmt.Errorf("train --plan: %w", err)}
	}
	out := cmd.OutOrStdout()
	if err := train.WritePlan(out, p); err != nil {
		return err
	}
	if !p.Fits {
		if best, ok := p.Suggest(); ok {
			fmt.Fprintln(out, "\nsuggested setting that fits:")
			return train.WritePlan(out, best)
		}
	}
	return nil
}
