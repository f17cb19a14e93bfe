// Package train trains a Mistral-architecture decoder with TRL's KTO loss on the packed
// shards that prep writes (kto_packed/), using GomlX on the pure-Go CPU backend by default
// and XLA/PJRT (CUDA) when built with -tags xla and asked for.
//
// Layout, after gomlx/examples/imdb: the model in model.go (ModelConfig.TokenLogProbs), the
// loss in loss.go (LossConfig.Build, TRL's kto_loss), the shards in dataset.go
// (BatchReader), reference log-probs in reflogps.go, and the loop here (Run).
//
// One optimizer step sees one KTO batch (or GradAccum of them), in one pass or in
// micro-batches (micro.go), with stored or recomputed layer activations (recompute.go). Its sequences are laid out
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
//
// It may import kto, export (to read prep's manifest), tokenize, loader, internal/safetensors
// and internal/hub. It is the only package that imports GomlX.
package train

import (
	stdcontext "context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"runtime/debug"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/gomlx/gomlx/pkg/ml/context/checkpoints"
	"github.com/gomlx/gomlx/pkg/ml/train/optimizers"
)

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
	// TrainableParameters: the adapter's in a LoRA run, else Parameters.
	TrainableParameters int         `json:"trainable_parameters"`
	Pretrained          bool        `json:"pretrained"`
	DType               string      `json:"dtype"`
	LoRA                *LoRAConfig `json:"lora,omitempty"`
	SavedAdapter        string      `json:"saved_adapter,omitempty"`
	SavedMerged         string      `json:"saved_merged,omitempty"`
	Loss                LossConfig  `json:"loss_config"`
	LearningRate        float64     `json:"learning_rate"`
	Backend             string      `json:"backend"`
	// HostHead: the LM head ran on the host (hosthead.go), not in the graph.
	HostHead      bool    `json:"host_head"`
	Ref           RefMode `json:"ref"`
	CheckpointDir string  `json:"checkpoint_dir,omitempty"`
	Interrupted   bool    `json:"interrupted,omitempty"`
}

// ErrCheckpoint marks a checkpoint directory that cannot be used as asked;
// ErrCheckpointExists (which wraps it) one that holds checkpoints while Resume is off.
var (
	ErrCheckpoint       = errors.New("checkpoint")
	ErrCheckpointExists = fmt.Errorf("%w: directory already holds checkpoints", ErrCheckpoint)
	// ErrCheckpointMismatch: --resume on checkpoints of another model, data or settings.
	ErrCheckpointMismatch = fmt.Errorf("%w: made by another run", ErrCheckpoint)
)

// runState is everything a run holds.
type runState struct {
	opts    Options
	status  func(string)
	backend backends.Backend
	shape   Shape
	model   ModelConfig
	src     ModelSource
	net     Net // the policy
	refNet  Net // the reference: the base model (a LoRA run's adapter off)
	loss    LossConfig
	ctx     *context.Context
	// refCtx holds the reference weights: the frozen initial model; in a LoRA run the
	// policy's own base tensors, shared (sharedRef), never a second copy.
	refCtx    *context.Context
	sharedRef bool
	// baseVars are the frozen base weights of a LoRA run (left out of checkpoints).
	baseVars []*context.Variable
	ckpt     *checkpoints.Handler
	lrVar    *context.Variable
	optim    gradientOptimizer
	trainEx  *shapedExec // apply the update
	accumEx  *shapedExec // accumulate gradients only (GradAccum > 1)
	// With micro-batches (micro.go): the KL pass, and the gradient passes that apply the
	// update or only accumulate.
	klEx, trainMicroEx, accumMicroEx *shapedExec
	evalEx                           *shapedExec
	refEx                            *shapedExec
	// hostHead: the LM head runs on the host (hosthead.go), with these graphs and packed heads.
	hostHead                                                    bool
	statesEx, refStatesEx, headLossEx, hostTrainEx, hostAccumEx *shapedExec
	slotSumEx                                                   *shapedExec
	policyHead, refHead                                         headCache
	// blockSize is the attention block of the layout; fixedDims, when set, pads every batch
	// to one shape (backends whose compilation is slow), else each batch's sizes are rounded.
	blockSize int
	fixedDims *layoutDims
	// fixedMicroDims is fixedDims for micro-batches.
	fixedMicroDims *layoutDims
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
	// Setup's transient host copies (random init's values before they become tensors, a
	// frozen reference freed after precomputing) would otherwise stay resident as free heap:
	// a step's peak RSS then shows the load's, not its own.
	debug.FreeOSMemory()
	return s.loop(stdctx)
}

// setup resolves options, scans the data, builds the model, optimizer, checkpoints and
// reference log-probs.
func (s *runState) setup() error {
	o := &s.opts
	o.withDefaults()
	if err := o.Validate(); err != nil {
		return err
	}

	var err error
	if s.manifest, err = ReadManifest(o.DataDir); err != nil {
		return err
	}
	// Every shard read is checked against the manifest (size, sha256) before step 1: a shard
	// copied from another run, or a listed one gone missing, is an error, never a silently
	// different run.
	var trainStamps, testStamps, stamps []shardStamp
	var testFiles []string
	if s.train, trainStamps, err = s.manifest.CheckedShards(SplitTrain); err != nil {
		return err
	}
	if !o.NoEval && s.manifest.Lists(SplitTest) {
		if testFiles, stamps, err = s.manifest.CheckedShards(SplitTest); err != nil {
			return err
		}
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
	if testFiles != nil {
		testStats, err := ScanSplit(testFiles)
		if err != nil {
			return err
		}
		if testStats.Batches > 0 {
			s.test, s.nTest, testStamps = testFiles, testStats.Batches, stamps
			if testStats.MaxLen != trainStats.MaxLen {
				return fmt.Errorf("%w: test rows have %d tokens, train rows %d", ErrBadRow, testStats.MaxLen, trainStats.MaxLen)
			}
			stats.MaxTokenID = max(stats.MaxTokenID, testStats.MaxTokenID)
			stats.MaxExample = max(stats.MaxExample, testStats.MaxExample)
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

	vocab := s.manifest.VocabSize
	if vocab == 0 {
		vocab = int(stats.MaxTokenID) + 1
	}
	if s.src, err = ResolveModel(o.Model, vocab, s.shape.MaxLen, o.Offline, s.status); err != nil {
		return err
	}
	s.model = s.src.Config
	if err := s.manifest.checkModel(s.src, s.status); err != nil {
		return err
	}
	if err := s.checkModelFits(int(stats.MaxTokenID)); err != nil {
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
	if err := s.ctx.SetRNGStateFromSeed(int64(o.Seed)); err != nil {
		return err
	}
	if o.CheckpointDir != "" {
		if err := s.openCheckpoints(); err != nil {
			return err
		}
	}
	if err := s.buildModel(); err != nil {
		return err
	}
	s.lrVar = optimizers.LearningRateVar(s.ctx, dtypes.Float32, o.LearningRate)
	s.optim = optimizers.Adam().LearningRate(o.LearningRate).Betas(adamBeta1, adamBeta2).
		Epsilon(adamEpsilon).WeightDecay(o.WeightDecay).Done().(gradientOptimizer)
	if err := s.buildReference(); err != nil {
		return err
	}
	s.blockSize = defaultBlockSize
	if !isCPU(s.backend) {
		// XLA compiles a graph in seconds: one shape for the whole run, the largest batch's.
		if err := s.scanLayouts(); err != nil {
			return err
		}
	}
	s.refEx = newShapedExec(s.backend, s.refCtx, s.forwardGraph(s.refNet))
	if s.microPasses() == 1 {
		s.trainEx = newShapedExec(s.backend, s.ctx, s.stepGraph(true, false))
		if o.GradAccum > 1 {
			s.accumEx = newShapedExec(s.backend, s.ctx, s.stepGraph(false, false))
		}
	} else {
		s.klEx = newShapedExec(s.backend, s.ctx, s.klGraph)
		s.trainMicroEx = newShapedExec(s.backend, s.ctx, s.stepGraph(true, true))
		s.accumMicroEx = newShapedExec(s.backend, s.ctx, s.stepGraph(false, true))
	}
	s.evalEx = newShapedExec(s.backend, s.ctx, s.evalGraph)
	if err := s.setupHostHead(); err != nil {
		return err
	}
	if o.Ref == RefPrecomputed || o.Ref == RefLazy {
		if s.refTrain, err = s.openRefCache(SplitTrain, trainStamps); err != nil {
			return err
		}
		if s.test != nil {
			if s.refTest, err = s.openRefCache(SplitTest, testStamps); err != nil {
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
	if s.refStatesEx != nil {
		s.refStatesEx.finalize()
		s.refStatesEx, s.refHead = nil, headCache{}
	}
	if !s.sharedRef {
		s.refCtx.Finalize()
	}
	s.refCtx = nil
	return nil
}
