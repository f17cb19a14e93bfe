package train

import (
	stdcontext "context"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/train/optimizers"
)

// sums accumulate loss outputs over several batches.
type sums struct {
	loss, kl, chosen, nChosen, rejected, nRejected float64
	batches                                        int
}

func (m *sums) add(outs []float64) {
	v := func(i int) float64 { return outs[i] }
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
		var v []float64
		var err error
		if s.hostHead {
			v, err = s.hostMetrics(r.b, r.ref, r.refKL)
		} else {
			var outs []*tensors.Tensor
			outs, err = s.execBatch(s.evalEx, r.b, r.ref, r.refKL)
			v = scalars(outs)
		}
		if err != nil {
			return Metrics{}, err
		}
		m.add(v)
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
		Backend: s.backend.Name(), HostHead: s.hostHead, Ref: o.Ref, CheckpointDir: o.CheckpointDir, StartStep: start,
		DType: o.DType, Pretrained: s.src.Weights, TrainableParameters: s.model.NumParameters()}
	if s.net.LoRA.Enabled() {
		sum.LoRA = &s.net.LoRA
		sum.TrainableParameters = s.net.LoRA.NumParameters(s.model)
	}

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
			outs, err := s.stepBatch(r.b, r.ref, r.refKL, micro == o.GradAccum-1)
			if err != nil {
				return sum, err
			}
			m.add(outs)
			gradNorm = outs[6]
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
	if err := s.saveOutputs(&sum); err != nil {
		return sum, err
	}
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
