// Package train trains a Mistral-architecture decoder with TRL's KTO loss on the packed
// shards that prep writes (kto_packed/), using GomlX on the pure-Go CPU backend by default
// and XLA/PJRT (CUDA) when built with -tags xla and asked for.
//
// Layout, after gomlx/examples/imdb: the model in model.go (ModelConfig.TokenLogProbs), the
// loss in loss.go (LossConfig.Build, TRL's kto_loss), the shards in dataset.go
// (BatchReader), reference log-probs in reflogps.go, and the loop here (Run).
//
// One optimizer step sees one KTO batch (or GradAccum of them). Its sequences are laid out
// again for the graphs (layout.go: targets and KL pairs in two groups, block-sparse
// attention, KL pairs reusing their target's prompt) and go through the model once;
// per-token log-probs of completion tokens are summed per example with a one-hot
// contraction; the loss compares them with the reference model's, which are cached per
// batch and computed, when missing, on a second goroutine one batch ahead (reflogps.go).
// On the CPU backend a new batch shape compiles in milliseconds, so each batch's sizes are
// only rounded up; other backends pad every batch to the largest one.
//
// The loop is written out rather than using GomlX's
// train.Trainer because a step needs inputs the Trainer's (inputs, labels) → loss contract
// does not carry well (reference log-probs, per-example masks), global-norm gradient
// clipping and an LR schedule set from the host.
package train

import (
	stdcontext "context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/backends/simplego"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/gomlx/gomlx/pkg/ml/context/checkpoints"
	"github.com/gomlx/gomlx/pkg/ml/context/initializers"
	"github.com/gomlx/gomlx/pkg/ml/train/optimizers"
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

// Metrics are the loss and TRL's logged KTO metrics over a step or an evaluation. The
// rewards are nil when the batch had no example of that label (TRL omits them then).
type Metrics struct {
	Loss            float64  `json:"loss"`
	RewardsChosen   *float64 `json:"rewards_chosen"`
	RewardsRejected *float64 `json:"rewards_rejected"`
	KL              float64  `json:"kl"`
	Margin          *float64 `json:"margin"`
}

// StepMetrics is one line of `train --json` and of the --log JSONL file.
type StepMetrics struct {
	Step int `json:"step"`
	Metrics
	TokensPerS float64  `json:"tokens_per_s"`
	Tokens     int      `json:"tokens"`
	Epoch      float64  `json:"epoch"`
	LR         float64  `json:"lr"`
	GradNorm   float64  `json:"grad_norm"`
	Eval       *Metrics `json:"eval,omitempty"`
}

// Summary describes a finished run.
type Summary struct {
	Steps          int         `json:"steps"`
	StartStep      int         `json:"start_step"`
	Epochs         float64     `json:"epochs"`
	FinalLoss      float64     `json:"final_loss"`
	MeanTokensPerS float64     `json:"mean_tokens_per_s"`
	Tokens         int64       `json:"tokens"`
	TrainSeconds   float64     `json:"train_seconds"`
	Eval           *Metrics    `json:"eval,omitempty"`
	Model          ModelConfig `json:"model"`
	Parameters     int         `json:"parameters"`
	Loss           LossConfig  `json:"loss_config"`
	LearningRate   float64     `json:"learning_rate"`
	Backend        string      `json:"backend"`
	Ref            RefMode     `json:"ref"`
	CheckpointDir  string      `json:"checkpoint_dir,omitempty"`
	Interrupted    bool        `json:"interrupted,omitempty"`
}

// ErrCheckpoint marks a checkpoint directory that cannot be used as asked;
// ErrCheckpointExists (which wraps it) one that holds checkpoints while Resume is off.
var (
	ErrCheckpoint       = errors.New("checkpoint")
	ErrCheckpointExists = fmt.Errorf("%w: directory already holds checkpoints", ErrCheckpoint)
)

// NewBackend creates a GomlX backend from a config string ("" → $GOMLX_BACKEND → "go").
// A "go" config that names no ops_ mode gets ops_sequential: SimpleGo's default mode, which
// runs a graph's ops in parallel when one graph executes, hung at 0% CPU on a 2-core machine
// (its worker pool waiting on itself). Matrix products still use the worker pool, and the
// trainer runs the reference model beside the training step. Backends not compiled in (xla
// without -tags xla) are an error, not a panic.
func NewBackend(config string) (b backends.Backend, err error) {
	if config == "" {
		config = os.Getenv(backends.ConfigEnvVar)
	}
	config = backendConfig(config)
	// SimpleGo prints its parallelism setting on stdout, which belongs to --json output.
	stdout := os.Stdout
	os.Stdout = os.Stderr
	defer func() { os.Stdout = stdout }()
	if perr := catchPanic(func() { b, err = backends.NewWithConfig(config) }); perr != nil {
		name, _, _ := strings.Cut(config, ":")
		return nil, fmt.Errorf("%w: backend %q: %v (compiled in: %v; XLA needs `go build -tags xla`)",
			ErrBadOption, name, perr, backends.List())
	}
	if err != nil {
		return nil, fmt.Errorf("backend %q: %w", config, err)
	}
	return b, nil
}

// backendConfig completes a backend config as NewBackend says.
func backendConfig(config string) string {
	if config == "" {
		config = simplego.BackendName
	}
	if name, opts, _ := strings.Cut(config, ":"); name == simplego.BackendName && !strings.Contains(opts, "ops_") {
		config = simplego.BackendName + ":" + strings.TrimPrefix(opts+",ops_sequential", ",")
	}
	return config
}

// runState is everything a run holds.
type runState struct {
	opts    Options
	status  func(string)
	backend backends.Backend
	shape   Shape
	model   ModelConfig
	loss    LossConfig
	ctx     *context.Context
	refCtx  *context.Context // frozen initial weights
	ckpt    *checkpoints.Handler
	lrVar   *context.Variable
	optim   gradientOptimizer
	trainEx *shapedExec // apply the update
	accumEx *shapedExec // accumulate gradients only (GradAccum > 1)
	evalEx  *shapedExec
	refEx   *shapedExec
	// blockSize is the attention block of the layout; fixedDims, when set, pads every batch
	// to one shape (backends whose compilation is slow), else each batch's sizes are rounded.
	blockSize int
	fixedDims *layoutDims
	// refTrain and refTest cache the splits' reference log-probs (nil: on the fly).
	refTrain *refCache
	refTest  *refCache
	stats    SplitStats // of the train split
	train    []string
	test     []string
	nTest    int // test batches
	manifest Manifest
	// announcedOnTheFly: the on-the-fly reference was reported.
	announcedOnTheFly bool
}

// gradientOptimizer is implemented by GomlX's Adam: an update from given gradients.
type gradientOptimizer interface {
	UpdateGraphWithGradients(ctx *context.Context, grads []*graph.Node, lossDType dtypes.DType)
}

// Run trains as opts says and returns a summary. Cancelling ctx stops after the current step
// and still saves a checkpoint. GomlX reports graph errors by panicking; Run returns them.
func Run(ctx stdcontext.Context, opts Options) (sum Summary, err error) {
	if perr := catchPanic(func() { sum, err = run(ctx, opts) }); perr != nil {
		err = perr
	}
	return sum, err
}

func run(stdctx stdcontext.Context, opts Options) (Summary, error) {
	s := &runState{opts: opts, status: opts.OnStatus}
	if s.status == nil {
		s.status = func(string) {}
	}
	if err := s.setup(); err != nil {
		return Summary{}, err
	}
	return s.loop(stdctx)
}

// setup resolves options, scans the data, builds the model, optimizer, checkpoints and
// reference log-probs.
func (s *runState) setup() error {
	o := &s.opts
	if o.DataDir == "" {
		return fmt.Errorf("%w: no data directory", ErrBadOption)
	}
	if o.GradAccum == 0 {
		o.GradAccum = 1
	}
	if o.Epochs == 0 {
		o.Epochs = DefaultEpochs
	}
	if o.Seed == 0 {
		o.Seed = DefaultSeed
	}
	if o.Ref == "" {
		o.Ref = RefPrecomputed
	}
	if o.Scheduler == "" {
		o.Scheduler = SchedulerLinear
	}
	if o.KeepCheckpoints == 0 {
		o.KeepCheckpoints = DefaultKeepCheckpoints
	}
	if o.ClipGradNorm == 0 {
		o.ClipGradNorm = DefaultClipGradNorm
	}
	switch {
	case o.GradAccum < 0 || o.Steps < 0 || o.Epochs < 0 || o.WarmupSteps < 0 || o.EvalEvery < 0 || o.CheckpointEvery < 0:
		return fmt.Errorf("%w: counts must not be negative", ErrBadOption)
	case o.Ref != RefPrecomputed && o.Ref != RefLazy && o.Ref != RefOnTheFly:
		return fmt.Errorf("%w: ref %q (want %q, %q or %q)", ErrBadOption, o.Ref, RefPrecomputed, RefLazy, RefOnTheFly)
	case o.Scheduler != SchedulerLinear && o.Scheduler != SchedulerConstant:
		return fmt.Errorf("%w: scheduler %q (want %q or %q)", ErrBadOption, o.Scheduler, SchedulerLinear, SchedulerConstant)
	case o.LearningRate < 0 || o.WeightDecay < 0:
		return fmt.Errorf("%w: learning rate and weight decay must not be negative", ErrBadOption)
	case o.Resume && o.CheckpointDir == "":
		return fmt.Errorf("%w: --resume needs a checkpoint directory", ErrBadOption)
	}
	// Zero weights are filled from the manifest below; check the rest before reading data.
	if err := o.Loss.withDefaults().Validate(); err != nil {
		return err
	}

	var err error
	if s.manifest, err = ReadManifest(o.DataDir); err != nil {
		return err
	}
	if s.train, err = ShardFiles(o.DataDir, SplitTrain); err != nil {
		return err
	}
	s.status(fmt.Sprintf("scanning %d train shard(s)", len(s.train)))
	trainStats, err := ScanSplit(s.train)
	if err != nil {
		return err
	}
	s.stats = trainStats
	if trainStats.Batches == 0 {
		return fmt.Errorf("%w: the train split has no rows", ErrNoShards)
	}
	stats := trainStats
	if !o.NoEval {
		if files, ferr := ShardFiles(o.DataDir, SplitTest); ferr == nil {
			testStats, err := ScanSplit(files)
			if err != nil {
				return err
			}
			if testStats.Batches > 0 {
				s.test, s.nTest = files, testStats.Batches
				if testStats.MaxLen != trainStats.MaxLen {
					return fmt.Errorf("%w: test rows have %d tokens, train rows %d", ErrBadRow, testStats.MaxLen, trainStats.MaxLen)
				}
				stats.MaxTokenID = max(stats.MaxTokenID, testStats.MaxTokenID)
				stats.MaxExample = max(stats.MaxExample, testStats.MaxExample)
			}
		}
	}
	s.shape = Shape{MaxLen: s.manifest.MaxLen, BatchSize: s.manifest.BatchSize}
	if s.shape.MaxLen == 0 {
		s.shape.MaxLen = stats.MaxLen
	}
	if s.shape.MaxLen != stats.MaxLen {
		return fmt.Errorf("%w: rows have %d tokens, the manifest says max_len %d", ErrBadRow, stats.MaxLen, s.shape.MaxLen)
	}
	if s.shape.BatchSize == 0 {
		s.shape.BatchSize = int(stats.MaxExample) + 1
	}

	if err := s.resolveModel(int(stats.MaxTokenID)); err != nil {
		return err
	}
	s.shape.VocabSize = s.model.VocabSize
	if int(stats.MaxTokenID) >= s.model.VocabSize {
		return fmt.Errorf("%w: token id %d in the data, vocab_size %d", ErrBadModelConfig, stats.MaxTokenID, s.model.VocabSize)
	}
	if err := s.model.checkRows(s.shape.MaxLen); err != nil {
		return err
	}

	s.loss = o.Loss
	if s.loss.DesirableWeight == 0 {
		s.loss.DesirableWeight = s.manifest.DesirableWeight
	}
	if s.loss.UndesirableWeight == 0 {
		s.loss.UndesirableWeight = s.manifest.UndesirableWeight
	}
	s.loss = s.loss.withDefaults()
	if err := s.loss.Validate(); err != nil {
		return err
	}
	if o.LearningRate == 0 {
		o.LearningRate = DefaultLearningRate
		if o.Model == "" || o.Model == TinyPreset {
			o.LearningRate = TinyLearningRate
		}
	}

	if s.backend, err = NewBackend(o.Backend); err != nil {
		return err
	}
	installDotGeneralVJP()

	s.ctx = context.New()
	if o.CheckpointDir != "" {
		if err := s.openCheckpoints(); err != nil {
			return err
		}
	}
	s.model.InitVariables(s.ctx, o.Seed)
	s.lrVar = optimizers.LearningRateVar(s.ctx, dtypes.Float32, o.LearningRate)
	s.optim = optimizers.Adam().LearningRate(o.LearningRate).Betas(adamBeta1, adamBeta2).
		Epsilon(adamEpsilon).WeightDecay(o.WeightDecay).Done().(gradientOptimizer)

	// The reference is the initial model, rebuilt from the seed: on resume the policy's
	// weights have moved, and the same seed gives bit-identical initial weights.
	s.refCtx = context.New()
	s.model.InitVariables(s.refCtx, o.Seed)
	for v := range s.refCtx.IterVariables() {
		v.SetTrainable(false)
	}
	s.blockSize = defaultBlockSize
	if _, cpu := s.backend.(*simplego.Backend); !cpu {
		// XLA compiles a graph in seconds: one shape for the whole run, the largest batch's.
		if err := s.scanLayouts(); err != nil {
			return err
		}
	}
	s.refEx = newShapedExec(s.backend, s.refCtx, s.forwardGraph)
	s.trainEx = newShapedExec(s.backend, s.ctx, s.stepGraph(true))
	if o.GradAccum > 1 {
		s.accumEx = newShapedExec(s.backend, s.ctx, s.stepGraph(false))
	}
	s.evalEx = newShapedExec(s.backend, s.ctx, s.evalGraph)
	if o.Ref == RefPrecomputed || o.Ref == RefLazy {
		if s.refTrain, err = s.openRefCache(SplitTrain, s.train); err != nil {
			return err
		}
		if s.test != nil {
			if s.refTest, err = s.openRefCache(SplitTest, s.test); err != nil {
				return err
			}
		}
	}
	if o.Ref == RefPrecomputed {
		return s.precomputeRefs()
	}
	return nil
}

// precomputeRefs fills the reference caches of both splits, saves them and frees the frozen
// weights.
func (s *runState) precomputeRefs() error {
	for _, sp := range []struct {
		split Split
		files []string
		cache *refCache
	}{{SplitTrain, s.train, s.refTrain}, {SplitTest, s.test, s.refTest}} {
		if sp.cache == nil {
			continue
		}
		br := NewBatchReader(sp.files, s.shape)
		for {
			b, err := br.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				br.Close()
				return err
			}
			if _, _, computed, err := s.batchRefs(b, sp.cache); err != nil {
				br.Close()
				return err
			} else if computed && !sp.cache.announced {
				sp.cache.announced = true
				s.status(fmt.Sprintf("computing reference log-probs for %s (cached in %s)",
					sp.split, filepath.Join(RefDir, string(sp.split)+".parquet")))
			}
		}
		br.Close()
	}
	s.saveRefCaches()
	s.refEx.finalize()
	s.refEx = nil
	s.refCtx.Finalize()
	s.refCtx = nil
	return nil
}

// maxGraphsPerExec bounds the graphs a shapedExec keeps. A context.Exec compiles one graph
// per input shape and never evicts one, and on the CPU backend most batches get a shape of
// their own; compiling there takes milliseconds, so a full exec is simply rebuilt.
var maxGraphsPerExec = 64 // a variable for tests

// shapedExec runs a graph function for batches of any layout, keeping at most
// maxGraphsPerExec compiled shapes.
type shapedExec struct {
	backend backends.Backend
	ctx     *context.Context
	fn      func(*context.Context, []*graph.Node) []*graph.Node
	exec    *context.Exec
	seen    map[layoutDims]bool
	builds  int // context.Exec objects built
}

func newShapedExec(b backends.Backend, ctx *context.Context, fn func(*context.Context, []*graph.Node) []*graph.Node) *shapedExec {
	return &shapedExec{backend: b, ctx: ctx, fn: fn, seen: map[layoutDims]bool{}}
}

func (e *shapedExec) run(dims layoutDims, args []any) ([]*tensors.Tensor, error) {
	if !e.seen[dims] && len(e.seen) >= maxGraphsPerExec {
		e.finalize()
		// The variables (optimizer state included) exist by now: the rebuilt exec reuses them.
		e.ctx = e.ctx.Reuse()
	}
	if e.exec == nil {
		exec, err := context.NewExec(e.backend, e.ctx, e.fn)
		if err != nil {
			return nil, err
		}
		e.exec = exec.SetMaxCache(-1)
		e.builds++
	}
	e.seen[dims] = true
	return e.exec.Exec(args...)
}

func (e *shapedExec) finalize() {
	if e.exec != nil {
		e.exec.Finalize()
		e.exec = nil
	}
	clear(e.seen)
}

// scanLayouts sets fixedDims to sizes that fit every batch of both splits.
func (s *runState) scanLayouts() error {
	s.status("scanning batch shapes")
	var most layoutDims
	for _, files := range [][]string{s.train, s.test} {
		if files == nil {
			continue
		}
		br := NewBatchReader(files, s.shape)
		for {
			b, err := br.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				br.Close()
				return err
			}
			_, _, need := b.layoutNeed(s.shape.MaxLen, s.blockSize)
			most = layoutDims{most.Target.max(need.Target), most.KL.max(need.KL)}
		}
		br.Close()
	}
	s.fixedDims = &layoutDims{most.Target.rounded(), most.KL.rounded()}
	return nil
}

// resolveModel picks the model config: the tiny preset sized to the vocabulary, or a
// Hugging Face config.json.
func (s *runState) resolveModel(maxTokenID int) error {
	name := s.opts.Model
	if name == "" || name == TinyPreset {
		vocab := s.manifest.VocabSize
		if vocab == 0 {
			vocab = maxTokenID + 1
		}
		s.model = TinyConfig(vocab, s.shape.MaxLen)
		return s.model.Validate()
	}
	path := name
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, "config.json")
	}
	var err error
	s.model, err = LoadModelConfig(path)
	return err
}

// checkpointConfigFile, in the checkpoint directory, records what the checkpoints train.
const checkpointConfigFile = "ktoloader_train.json"

type checkpointConfig struct {
	Model     ModelConfig `json:"model"`
	Seed      uint64      `json:"seed"`
	MaxLen    int         `json:"max_len"`
	BatchSize int         `json:"batch_size"`
}

// openCheckpoints attaches the GomlX checkpoint handler, which loads the latest checkpoint
// (if any) into variables as the model creates them.
func (s *runState) openCheckpoints() error {
	dir := s.opts.CheckpointDir
	want := checkpointConfig{Model: s.model, Seed: s.opts.Seed, MaxLen: s.shape.MaxLen, BatchSize: s.shape.BatchSize}
	cfgPath := filepath.Join(dir, checkpointConfigFile)
	existing, _ := filepath.Glob(filepath.Join(dir, "checkpoint-*.json"))
	if len(existing) > 0 {
		if !s.opts.Resume {
			return fmt.Errorf("%w: %s: pass --resume to continue, or choose another directory", ErrCheckpointExists, dir)
		}
		data, err := os.ReadFile(cfgPath)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrCheckpoint, err)
		}
		var have checkpointConfig
		if err := json.Unmarshal(data, &have); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrCheckpoint, cfgPath, err)
		}
		hj, _ := json.Marshal(have)
		wj, _ := json.Marshal(want)
		if string(hj) != string(wj) {
			return fmt.Errorf("%w: %s was written for another model, seed or data shape:\n have %s\n want %s", ErrCheckpoint, dir, hj, wj)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	err := writeAtomic(cfgPath, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(want)
	})
	if err != nil {
		return err
	}
	s.ckpt, err = checkpoints.Build(s.ctx).Dir(dir).Keep(s.opts.KeepCheckpoints).ExcludeAllParams().Done()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCheckpoint, err)
	}
	if len(existing) > 0 {
		s.status(fmt.Sprintf("resuming from %s", dir))
	} else if s.opts.Resume {
		s.status(fmt.Sprintf("no checkpoint in %s yet: starting from scratch", dir))
	}
	return nil
}

// Graph inputs, in order: the eight arrays of the target group (seqGroup), those of the
// KL group, then five [B] float32 arrays.
const (
	inIDs = iota // offsets within a group
	inPositions
	inPairQuery
	inPairKey
	inPairBias
	inLabelPos
	inLabels
	inSlots
	numGroupInputs

	inTarget    = 0
	inKL        = numGroupInputs
	inDesirable = 2 * numGroupInputs
	inPresent   = inDesirable + 1
	inKLPresent = inDesirable + 2
	inRef       = inDesirable + 3
	inRefKL     = inDesirable + 4
)

func seqInputs(in []*graph.Node) SeqInputs {
	return SeqInputs{InputIDs: in[inIDs], PositionIDs: in[inPositions], PairQuery: in[inPairQuery],
		PairKey: in[inPairKey], PairBias: in[inPairBias], LabelPos: in[inLabelPos], Labels: in[inLabels]}
}

// forwardGraph returns the summed completion log-probs of targets and KL pairs, [B] each.
func (s *runState) forwardGraph(ctx *context.Context, in []*graph.Node) []*graph.Node {
	target, kl := s.model.TokenLogProbs(ctx, seqInputs(in[inTarget:]), seqInputs(in[inKL:]))
	return []*graph.Node{
		perSlotSum(target, in[inTarget+inSlots], s.shape.BatchSize),
		perSlotSum(kl, in[inKL+inSlots], s.shape.BatchSize),
	}
}

// lossGraph runs the policy and the loss.
func (s *runState) lossGraph(ctx *context.Context, in []*graph.Node) LossOutputs {
	logps := s.forwardGraph(ctx, in)
	return s.loss.Build(LossInputs{
		Policy: logps[0], Ref: in[inRef],
		// TRL computes the policy's KL-pair log-probs under no_grad; z0 is detached anyway.
		PolicyKL: graph.StopGradient(logps[1]), RefKL: in[inRefKL],
		Desirable: in[inDesirable], Present: in[inPresent], KLPresent: in[inKLPresent],
	})
}

func metricNodes(out LossOutputs) []*graph.Node {
	return []*graph.Node{out.Loss, out.KL, out.ChosenRewardSum, out.ChosenCount, out.RejectedRewardSum, out.RejectedCount}
}

func (s *runState) evalGraph(ctx *context.Context, in []*graph.Node) []*graph.Node {
	return metricNodes(s.lossGraph(ctx, in))
}

// accumulatorScope holds the gradient sums of GradAccum micro-batches.
const accumulatorScope = "/grad_accum"

// stepGraph builds a training step. With apply false it adds the gradients to
// accumulators; with apply true it averages the accumulated and current gradients, clips
// their global norm, applies AdamW and clears the accumulators. Outputs: the loss metrics
// and the gradient norm before clipping (0 when not applying).
func (s *runState) stepGraph(apply bool) func(ctx *context.Context, in []*graph.Node) []*graph.Node {
	return func(ctx *context.Context, in []*graph.Node) []*graph.Node {
		g := in[0].Graph()
		out := s.lossGraph(ctx, in)
		grads := ctx.BuildTrainableVariablesGradientsGraph(out.Loss)
		metrics := metricNodes(out)
		accum := s.opts.GradAccum
		if accum > 1 {
			i := 0
			for v := range ctx.IterVariables() {
				if !v.Trainable || !v.InUseByGraph(g) {
					continue
				}
				acc := ctx.Checked(false).InAbsPath(accumulatorScope+v.Scope()).
					WithInitializer(initializers.Zero).VariableWithShape(v.Name(), v.Shape()).SetTrainable(false)
				sum := graph.Add(acc.ValueGraph(g), grads[i])
				if apply {
					grads[i] = graph.MulScalar(sum, 1/float64(accum))
					acc.SetValueGraph(graph.ZerosLike(sum))
				} else {
					acc.SetValueGraph(sum)
				}
				i++
			}
		}
		if !apply {
			return append(metrics, graph.ScalarZero(g, dtypes.Float32))
		}
		var sq *graph.Node
		for _, gr := range grads {
			t := graph.ReduceAllSum(graph.Square(gr))
			if sq == nil {
				sq = t
			} else {
				sq = graph.Add(sq, t)
			}
		}
		norm := graph.Sqrt(sq)
		if clip := s.opts.ClipGradNorm; clip > 0 {
			coef := graph.MinScalar(graph.Div(graph.Scalar(g, dtypes.Float32, clip), graph.AddScalar(norm, clipEpsilon)), 1.0)
			for i := range grads {
				grads[i] = graph.Mul(grads[i], coef)
			}
		}
		s.optim.UpdateGraphWithGradients(ctx, grads, out.Loss.DType())
		return append(metrics, norm)
	}
}

// layout lays a batch out for the graphs: padded to fixedDims, or to its own rounded sizes.
func (s *runState) layout(b *Batch) (batchLayout, error) {
	targets, kls, need := b.layoutNeed(s.shape.MaxLen, s.blockSize)
	dims := layoutDims{need.Target.rounded(), need.KL.rounded()}
	if s.fixedDims != nil {
		dims = *s.fixedDims
		if !dims.Target.fits(need.Target) || !dims.KL.fits(need.KL) {
			return batchLayout{}, fmt.Errorf("batch %d needs %+v, more than the %+v scanned", b.Index, need, dims)
		}
	}
	return newBatchLayout(targets, kls, s.blockSize, dims), nil
}

// batchArgs converts a batch to the graph inputs.
func (s *runState) batchArgs(l batchLayout, b *Batch, ref, refKL []float32) []any {
	bt := func(x []float32) *tensors.Tensor { return tensors.FromFlatDataAndDimensions(x, s.shape.BatchSize) }
	args := append(groupArgs(&l.Target), groupArgs(&l.KL)...)
	return append(args, bt(b.Desirable), bt(b.Present), bt(b.KLPresent), bt(ref), bt(refKL))
}

// groupArgs are a seqGroup's graph inputs, in the order of the in* offsets.
func groupArgs(gr *seqGroup) []any {
	vec := func(x []int32) *tensors.Tensor { return tensors.FromFlatDataAndDimensions(x, len(x)) }
	bs := gr.BlockSize
	return []any{vec(gr.InputIDs), vec(gr.PositionIDs), vec(gr.PairQuery), vec(gr.PairKey),
		tensors.FromFlatDataAndDimensions(gr.PairBias, gr.Dims.Pairs, bs, bs),
		vec(gr.LabelPos), vec(gr.Labels), vec(gr.Slots)}
}

// execBatch lays a batch out and runs e on it.
func (s *runState) execBatch(e *shapedExec, b *Batch, ref, refKL []float32) ([]*tensors.Tensor, error) {
	l, err := s.layout(b)
	if err != nil {
		return nil, err
	}
	return e.run(layoutDims{l.Target.Dims, l.KL.Dims}, s.batchArgs(l, b, ref, refKL))
}

// refForward runs the frozen reference on a batch.
func (s *runState) refForward(b *Batch) (logp, logpKL []float32, err error) {
	zero := make([]float32, s.shape.BatchSize)
	outs, err := s.execBatch(s.refEx, b, zero, zero)
	if err != nil {
		return nil, nil, err
	}
	return tensors.MustCopyFlatData[float32](outs[0]), tensors.MustCopyFlatData[float32](outs[1]), nil
}

// openRefCache loads the split's cached reference log-probs, or starts an empty cache.
func (s *runState) openRefCache(split Split, files []string) (*refCache, error) {
	stamps, err := stampShards(files)
	if err != nil {
		return nil, err
	}
	sc := refSidecar{Split: split, ManifestSHA256: s.manifest.SHA256, Shards: stamps, Model: s.model,
		Seed: s.opts.Seed, Init: refInitScheme, MaxLen: s.shape.MaxLen, BatchSize: s.shape.BatchSize}
	cached, err := loadRefCache(s.opts.DataDir, sc)
	if err != nil {
		return nil, err
	}
	if cached != nil {
		s.status(fmt.Sprintf("reusing reference log-probs %s (%d sequences)", filepath.Join(RefDir, string(split)+".parquet"), len(cached)))
	} else {
		cached = refLogProbs{}
	}
	return &refCache{sidecar: sc, logps: cached}, nil
}

// batchRefs returns the batch's reference values: cached, or computed by the frozen model
// (and then cached). computed says which.
func (s *runState) batchRefs(b *Batch, cache *refCache) (ref, refKL []float32, computed bool, err error) {
	if cache != nil {
		ref, refKL = make([]float32, s.shape.BatchSize), make([]float32, s.shape.BatchSize)
		if cache.logps.fill(b, ref, refKL) == nil {
			return ref, refKL, false, nil
		}
	}
	if s.refEx == nil {
		// precomputeRefs covered every batch of both splits; the data changed under the run.
		return nil, nil, false, &DataError{Row: -1, Batch: b.Index,
			Err: fmt.Errorf("%w: no precomputed reference log-probs for this batch", ErrBadShard)}
	}
	if ref, refKL, err = s.refForward(b); err != nil {
		return nil, nil, false, err
	}
	if cache != nil {
		cache.logps.add(b, ref, refKL)
		cache.dirty = true
	}
	return ref, refKL, true, nil
}

// newRefFeed feeds batches from next with their reference values.
func (s *runState) newRefFeed(cache *refCache, next func() (*Batch, error)) *refFeed {
	return &refFeed{compute: func() refBatch {
		b, err := next()
		if err != nil {
			return refBatch{err: err}
		}
		r := refBatch{b: b}
		r.ref, r.refKL, r.computed, r.err = s.batchRefs(b, cache)
		return r
	}}
}

// announceRefs reports, once per split, that reference log-probs are being computed.
func (s *runState) announceRefs(r refBatch, cache *refCache, split Split) {
	if !r.computed || (cache != nil && cache.announced) {
		return
	}
	if cache == nil {
		if split == SplitTrain && !s.announcedOnTheFly {
			s.announcedOnTheFly = true
			s.status("computing reference log-probs on the fly (frozen initial weights)")
		}
		return
	}
	cache.announced = true
	s.status(fmt.Sprintf("computing reference log-probs for %s as batches are first used (cached in %s)",
		split, filepath.Join(RefDir, string(split)+".parquet")))
}

// saveRefCaches writes the caches that gained batches. A cache that cannot be written
// (read-only data) is only reported.
func (s *runState) saveRefCaches() {
	for _, c := range []*refCache{s.refTrain, s.refTest} {
		if c == nil || !c.dirty {
			continue
		}
		if err := saveRefCache(s.opts.DataDir, c.sidecar, c.logps); err != nil {
			s.status(fmt.Sprintf("could not cache reference log-probs: %v", err))
			continue
		}
		c.dirty = false
	}
}

// sums accumulate loss outputs over several batches.
type sums struct {
	loss, kl, chosen, nChosen, rejected, nRejected float64
	batches                                        int
}

func (m *sums) add(outs []*tensors.Tensor) {
	v := func(i int) float64 { return float64(tensors.ToScalar[float32](outs[i])) }
	m.loss += v(0)
	m.kl += v(1)
	m.chosen += v(2)
	m.nChosen += v(3)
	m.rejected += v(4)
	m.nRejected += v(5)
	m.batches++
}

// metrics averages: loss and kl per batch (TRL averages per-step values), rewards per example.
func (m *sums) metrics() Metrics {
	out := Metrics{Loss: m.loss / float64(max(m.batches, 1)), KL: m.kl / float64(max(m.batches, 1))}
	if m.nChosen > 0 {
		c := m.chosen / m.nChosen
		out.RewardsChosen = &c
	}
	if m.nRejected > 0 {
		r := m.rejected / m.nRejected
		out.RewardsRejected = &r
	}
	if out.RewardsChosen != nil && out.RewardsRejected != nil {
		margin := *out.RewardsChosen - *out.RewardsRejected
		out.Margin = &margin
	}
	return out
}

// evaluate runs the loss over the whole test split.
func (s *runState) evaluate() (Metrics, error) {
	var m sums
	br := NewBatchReader(s.test, s.shape)
	defer br.Close()
	feed := s.newRefFeed(s.refTest, br.Next)
	defer feed.stop()
	for {
		r := feed.get(true)
		if r.err == io.EOF {
			break
		}
		if r.err != nil {
			return Metrics{}, r.err
		}
		s.announceRefs(r, s.refTest, SplitTest)
		outs, err := s.execBatch(s.evalEx, r.b, r.ref, r.refKL)
		if err != nil {
			return Metrics{}, err
		}
		m.add(outs)
	}
	return m.metrics(), nil
}

// learningRate is Hugging Face's schedule at optimizer step index i (0-based) of total:
// linear warmup from 0 over warmup steps, then constant or linear decay to 0.
func learningRate(base float64, scheduler string, i, warmup, total int) float64 {
	if i < warmup {
		return base * float64(i) / float64(max(1, warmup))
	}
	if scheduler == SchedulerConstant {
		return base
	}
	return base * max(0, float64(total-i)/float64(max(1, total-warmup)))
}

// epochReader cycles over the train split: at the end of an epoch it starts again.
type epochReader struct {
	s  *runState
	br *BatchReader
}

func (e *epochReader) next() (*Batch, error) {
	for range 2 {
		if e.br == nil {
			e.br = NewBatchReader(e.s.train, e.s.shape)
		}
		b, err := e.br.Next()
		if err == io.EOF {
			_ = e.br.Close()
			e.br = nil
			continue
		}
		if err != nil {
			return nil, err
		}
		return b, nil
	}
	return nil, fmt.Errorf("%w: the train split has no rows", ErrNoShards)
}

func (e *epochReader) close() {
	if e.br != nil {
		_ = e.br.Close()
	}
}

// loop runs the optimizer steps.
func (s *runState) loop(stdctx stdcontext.Context) (Summary, error) {
	o := s.opts
	perEpoch := s.stats.Batches
	total := o.Steps
	if total == 0 {
		total = o.Epochs * perEpoch / o.GradAccum
		if total == 0 {
			return Summary{}, fmt.Errorf("%w: %d batch(es) × %d epoch(s) is less than one step of %d accumulated batches",
				ErrBadOption, perEpoch, o.Epochs, o.GradAccum)
		}
	}
	start := int(optimizers.GetGlobalStep(s.ctx))
	sum := Summary{Model: s.model, Parameters: s.model.NumParameters(), Loss: s.loss, LearningRate: o.LearningRate,
		Backend: s.backend.Name(), Ref: o.Ref, CheckpointDir: o.CheckpointDir, StartStep: start}

	if o.OnStart != nil {
		o.OnStart(start, total)
	}
	reader := &epochReader{s: s}
	defer reader.close()
	defer s.saveRefCaches()
	// Resume where the data stream left off: batch order is fixed, so skip what was consumed.
	skip := (start * o.GradAccum) % perEpoch
	for range skip {
		if _, err := reader.next(); err != nil {
			return sum, err
		}
	}
	consumed := start * o.GradAccum // micro-batches, all epochs
	// The reference values of the next batch are computed while a step runs.
	feed := s.newRefFeed(s.refTrain, reader.next)
	defer feed.stop()

	trainStart := time.Now()
	var last StepMetrics
	step := start
	for ; step < total; step++ {
		if stdctx.Err() != nil {
			sum.Interrupted = true
			break
		}
		stepStart := time.Now()
		lr := learningRate(o.LearningRate, o.Scheduler, step, o.WarmupSteps, total)
		s.lrVar.MustSetValue(tensors.FromScalar(float32(lr)))
		var m sums
		tokens := 0
		var gradNorm float64
		for micro := range o.GradAccum {
			more := micro < o.GradAccum-1 || step+1 < total
			r := feed.get(more)
			if r.err != nil {
				return sum, r.err
			}
			s.announceRefs(r, s.refTrain, SplitTrain)
			consumed++
			exec := s.trainEx
			if micro < o.GradAccum-1 {
				exec = s.accumEx
			}
			outs, err := s.execBatch(exec, r.b, r.ref, r.refKL)
			if err != nil {
				return sum, err
			}
			m.add(outs)
			gradNorm = float64(tensors.ToScalar[float32](outs[6]))
			tokens += r.b.Tokens
		}
		metrics := m.metrics()
		if math.IsNaN(metrics.Loss) || math.IsInf(metrics.Loss, 0) {
			return sum, fmt.Errorf("step %d: loss is %v", step+1, metrics.Loss)
		}
		elapsed := time.Since(stepStart).Seconds()
		last = StepMetrics{Step: step + 1, Metrics: metrics, TokensPerS: float64(tokens) / elapsed, Tokens: tokens,
			Epoch: float64(consumed) / float64(perEpoch), LR: lr, GradNorm: gradNorm}
		sum.Tokens += int64(tokens)
		if s.test != nil && o.EvalEvery > 0 && (step+1)%o.EvalEvery == 0 && step+1 < total {
			feed.wait() // one reference computation at a time
			ev, err := s.evaluate()
			if err != nil {
				return sum, err
			}
			last.Eval = &ev
		}
		if o.OnStep != nil {
			o.OnStep(last)
		}
		if s.ckpt != nil && o.CheckpointEvery > 0 && (step+1)%o.CheckpointEvery == 0 {
			if err := s.ckpt.Save(); err != nil {
				return sum, err
			}
		}
	}
	feed.stop()
	sum.TrainSeconds = time.Since(trainStart).Seconds()
	sum.Steps = step
	sum.Epochs = float64(consumed) / float64(perEpoch)
	sum.FinalLoss = last.Loss
	if sum.TrainSeconds > 0 {
		sum.MeanTokensPerS = float64(sum.Tokens) / sum.TrainSeconds
	}
	if s.ckpt != nil && step > start {
		if err := s.ckpt.Save(); err != nil {
			return sum, err
		}
	}
	s.saveRefCaches()
	if s.test != nil && !sum.Interrupted {
		s.status("evaluating on the test split")
		ev, err := s.evaluate()
		if err != nil {
			return sum, err
		}
		sum.Eval = &ev
	}
	return sum, nil
}
