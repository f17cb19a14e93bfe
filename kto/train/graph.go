package train

import (
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/gomlx/gomlx/pkg/ml/context/initializers"
)

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

// forwardGraph returns a graph of net's summed completion log-probs of targets and KL
// pairs, [B] each.
func (s *runState) forwardGraph(net Net) func(ctx *context.Context, in []*graph.Node) []*graph.Node {
	return func(ctx *context.Context, in []*graph.Node) []*graph.Node {
		target, kl := net.TokenLogProbs(ctx, seqInputs(in[inTarget:]), seqInputs(in[inKL:]))
		return []*graph.Node{
			perSlotSum(target, in[inTarget+inSlots], s.shape.BatchSize),
			perSlotSum(kl, in[inKL+inSlots], s.shape.BatchSize),
		}
	}
}

// lossGraph runs the policy and the loss.
func (s *runState) lossGraph(ctx *context.Context, in []*graph.Node) LossOutputs {
	logps := s.forwardGraph(s.net)(ctx, in)
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
		ctx.SetTraining(g, true) // LoRA dropout
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
