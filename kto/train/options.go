package train

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
	// Model is TinyPreset (default), a config.json path, or a directory holding config.json.
	Model        string
	Loss         LossConfig // zero weights: the manifest's suggestion, else 1
	LearningRate float64
	Scheduler    string
	WarmupSteps  int
	WeightDecay  float64
	// ClipGradNorm clips the global gradient norm; negative disables (0 means the default 1).
	ClipGradNorm float64
	GradAccum    int
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
