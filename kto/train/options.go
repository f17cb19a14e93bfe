package train

import (
	"cmp"
	"fmt"
	"math"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
)

// Training defaults. The optimizer ones are Hugging Face TrainingArguments' (AdamW, β =
// (0.9, 0.999), ε = 1e-8, gradient clipping at norm 1, linear schedule, no weight decay).
const (
	// DefaultLearningRate is TRL KTOConfig's, meant for pretrained models.
	DefaultLearningRate = 1e-6
	// TinyLearningRate is the default for the tiny preset, which starts from random weights:
	// at 1e-6 nothing visible would happen in a demo run.
	TinyLearningRate    = 1e-3
	DefaultClipGradNorm = 1.0
	DefaultEpochs       = 1
	DefaultSeed         = 42
	// DefaultKeepCheckpoints is how many checkpoints the checkpoint directory keeps.
	DefaultKeepCheckpoints = 3
	adamBeta1              = 0.9
	adamBeta2              = 0.999
	adamEpsilon            = 1e-8
	// clipEpsilon is torch.nn.utils.clip_grad_norm_'s: coef = max_norm / (norm + 1e-6).
	clipEpsilon = 1e-6
)

// LR schedules, by Hugging Face's lr_scheduler_type names.
const (
	SchedulerLinear   = "linear"   // warmup from 0, then linear decay to 0 at the last step
	SchedulerConstant = "constant" // warmup from 0, then constant
)

// Options configure Run. Zero fields take the defaults.
type Options struct {
	DataDir string
	// Model is TinyPreset (default), a config.json path, a directory holding config.json
	// (and the weights, when it has them), or a Hugging Face repo id "org/name[@rev]".
	Model string
	// Offline never downloads a repo id's files (also $HF_HUB_OFFLINE=1).
	Offline bool
	// DType is the dtype of frozen weights and matrix products: "float32" (default) or
	// "bfloat16". Trainable weights, optimizer state, norms and the loss stay float32.
	DType string
	// LoRA trains an adapter (Rank > 0) on the frozen base instead of every weight.
	LoRA LoRAConfig
	// Adapter starts from a saved PEFT adapter directory (its config replaces LoRA's).
	Adapter string
	// SaveAdapter and SaveMerged, when set, receive the trained adapter (PEFT layout) and
	// the merged model (Hugging Face layout, in the base weights' dtype) at the end.
	SaveAdapter  string
	SaveMerged   string
	Loss         LossConfig // zero weights: the manifest's suggestion, else 1
	LearningRate float64
	Scheduler    string
	WarmupSteps  int
	WeightDecay  float64
	// ClipGradNorm clips the global gradient norm; negative disables (0 means the default 1).
	ClipGradNorm float64
	GradAccum    int
	// MicroBatch splits each KTO batch into passes of this many examples whose gradients
	// accumulate before the step (micro.go); 0, or the batch size or more: one pass.
	MicroBatch int
	// Recompute keeps only each decoder layer's input for the backward pass and recomputes
	// the layer there (recompute.go).
	Recompute bool
	// HeadChunk > 0 runs the LM head over vocabulary chunks of this many ids and recomputes
	// them in the backward pass (head.go): no [scored positions × vocab] logits are kept,
	// for one more head product over the positions that get a gradient. 0: the plain head.
	HeadChunk int
	// HostHead runs the LM head outside the graph on the CPU backend (hosthead.go):
	// HostHeadAuto (or empty) where it can, HostHeadOn (an error where it cannot), HostHeadOff.
	HostHead string
	// Steps is the number of optimizer steps; 0 means Epochs passes over the train split.
	Steps  int
	Epochs int
	Seed   uint64
	// EvalEvery evaluates on the test split every so many steps (0: only at the end).
	EvalEvery int
	// NoEval skips evaluation altogether.
	NoEval          bool
	CheckpointDir   string
	CheckpointEvery int
	KeepCheckpoints int
	// Resume continues from the latest checkpoint in CheckpointDir (fresh when empty).
	Resume bool
	// Backend is a GomlX backend config ("go", "xla:cuda", …); empty: $GOMLX_BACKEND, else "go".
	Backend string
	Ref     RefMode
	// OnStart is told the first step (non-zero on resume) and the number of steps of the run;
	// OnStep receives each optimizer step's metrics; OnStatus short progress messages.
	OnStart  func(startStep, totalSteps int)
	OnStep   func(StepMetrics)
	OnStatus func(string)
}

// DType names accepted by Options.DType.
const (
	DTypeFloat32  = "float32"
	DTypeBFloat16 = "bfloat16"
)

// withDefaults fills the zero fields that have a default known without the data.
func (o *Options) withDefaults() {
	// cmp.Or: the first non-zero, as kto.Config.WithDefaults fills its fields.
	o.GradAccum = cmp.Or(o.GradAccum, 1)
	o.Epochs = cmp.Or(o.Epochs, DefaultEpochs)
	o.Seed = cmp.Or(o.Seed, DefaultSeed)
	o.Ref = cmp.Or(o.Ref, RefPrecomputed)
	o.Scheduler = cmp.Or(o.Scheduler, SchedulerLinear)
	o.KeepCheckpoints = cmp.Or(o.KeepCheckpoints, DefaultKeepCheckpoints)
	o.ClipGradNorm = cmp.Or(o.ClipGradNorm, DefaultClipGradNorm) // negative (off) and NaN (refused) stay
	o.DType = cmp.Or(o.DType, DTypeFloat32)
	o.LoRA = o.LoRA.withDefaults()
}

// Validate names the flag of the first option that cannot run. NaN and infinities are
// refused wherever a number is taken: a NaN learning rate would train to NaN with no error
// until the loss check, a NaN clip norm would silently disable clipping.
func (o *Options) Validate() error {
	bad := func(flag string, v any, why string) error {
		return fmt.Errorf("%w: --%s %v %s", ErrBadOption, flag, v, why)
	}
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	switch {
	case o.DataDir == "":
		return fmt.Errorf("%w: no data directory (--data)", ErrBadOption)
	case o.GradAccum < 0:
		return bad("grad-accum", o.GradAccum, "must be ≥ 1")
	case o.HostHead != "" && o.HostHead != HostHeadAuto && o.HostHead != HostHeadOn && o.HostHead != HostHeadOff:
		return fmt.Errorf("%w: --host-head %q (want %s, %s or %s)", ErrBadOption, o.HostHead, HostHeadAuto, HostHeadOn, HostHeadOff)
	case o.HeadChunk < 0:
		return bad("head-chunk", o.HeadChunk, "must not be negative")
	case o.MicroBatch < 0:
		return bad("micro-batch", o.MicroBatch, "must not be negative")
	case o.Recompute && o.LoRA.Dropout > 0:
		return fmt.Errorf("%w: --recompute with --lora-dropout %v: the recomputed layers would draw new dropout masks", ErrBadOption, o.LoRA.Dropout)
	case o.Steps < 0:
		return bad("steps", o.Steps, "must not be negative")
	case o.Epochs < 0:
		return bad("epochs", o.Epochs, "must not be negative")
	case o.WarmupSteps < 0:
		return bad("warmup-steps", o.WarmupSteps, "must not be negative")
	case o.EvalEvery < 0:
		return bad("eval-every", o.EvalEvery, "must not be negative")
	case o.CheckpointEvery < 0:
		return bad("checkpoint-every", o.CheckpointEvery, "must not be negative")
	case o.KeepCheckpoints < 0:
		return bad("keep-checkpoints", o.KeepCheckpoints, "must not be negative")
	case o.Ref != RefPrecomputed && o.Ref != RefLazy && o.Ref != RefOnTheFly:
		return bad("ref", o.Ref, fmt.Sprintf("(want %q, %q or %q)", RefPrecomputed, RefLazy, RefOnTheFly))
	case o.Scheduler != SchedulerLinear && o.Scheduler != SchedulerConstant:
		return bad("lr-scheduler", o.Scheduler, fmt.Sprintf("(want %q or %q)", SchedulerLinear, SchedulerConstant))
	case !finite(o.LearningRate) || o.LearningRate < 0:
		return bad("lr", o.LearningRate, "must be a finite number ≥ 0")
	case !finite(o.WeightDecay) || o.WeightDecay < 0:
		return bad("weight-decay", o.WeightDecay, "must be a finite number ≥ 0")
	case !finite(o.ClipGradNorm):
		return bad("clip-grad-norm", o.ClipGradNorm, "must be a finite number")
	case o.Resume && o.CheckpointDir == "":
		return fmt.Errorf("%w: --resume needs --checkpoint-dir", ErrBadOption)
	case o.DType != DTypeFloat32 && o.DType != DTypeBFloat16:
		return bad("dtype", o.DType, fmt.Sprintf("(want %q or %q)", DTypeFloat32, DTypeBFloat16))
	case o.Adapter != "" && o.LoRA.Enabled():
		return fmt.Errorf("%w: --adapter brings its own LoRA config: drop --lora-r", ErrBadOption)
	case o.SaveAdapter != "" && !o.LoRA.Enabled() && o.Adapter == "":
		return fmt.Errorf("%w: --save-adapter needs a LoRA run (--lora-r R)", ErrBadOption)
	}
	if err := o.LoRA.Validate(); err != nil {
		return err
	}
	// Zero weights are filled from the manifest later; check the rest before reading data.
	return o.Loss.withDefaults().Validate()
}

// computeDType is o.DType as a GomlX dtype.
func (o *Options) computeDType() dtypes.DType {
	if o.DType == DTypeBFloat16 {
		return dtypes.BFloat16
	}
	return dtypes.Float32
}
