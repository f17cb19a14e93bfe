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

// Inputs of a micro-batch's gradient pass (micro.go): the eight arrays of the micro-batch's
// target group, then seven [B] float32 arrays over the whole KTO batch, the policy's KL-pair
// log-probs (from the KL pass) and the micro-batch's slot mask among them.
const (
	mbDesirable = numGroupInputs + iota
	mbPresent
	mbKLPresent
	mbRef
	mbRefKL
	mbPolicyKL
	mbMicro
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
	out, _ := s.lossPass(ctx, in, false)
	return out
}

// lossPass builds the policy forward and the loss of a whole-batch graph (in: the graph
// inputs above) or of a micro-batch's gradient pass (micro: the mb* inputs), and the policy
// pass that differentiates it.
func (s *runState) lossPass(ctx *context.Context, in []*graph.Node, micro bool) (LossOutputs, policyPass) {
	B := s.shape.BatchSize
	if micro {
		p := s.net.buildPolicyPass(ctx, seqInputs(in[inTarget:]), nil, s.opts.Recompute)
		return s.loss.Build(LossInputs{
			Policy: perSlotSum(p.target, in[inTarget+inSlots], B), Ref: in[mbRef],
			PolicyKL: in[mbPolicyKL], RefKL: in[mbRefKL],
			Desirable: in[mbDesirable], Present: in[mbPresent], KLPresent: in[mbKLPresent], Micro: in[mbMicro],
		}), p
	}
	kl := seqInputs(in[inKL:])
	p := s.net.buildPolicyPass(ctx, seqInputs(in[inTarget:]), &kl, s.opts.Recompute)
	return s.loss.Build(LossInputs{
		Policy: perSlotSum(p.target, in[inTarget+inSlots], B), Ref: in[inRef],
		// TRL computes the policy's KL-pair log-probs under no_grad; z0 is detached anyway.
		PolicyKL: graph.StopGradient(perSlotSum(p.kl, in[inKL+inSlots], B)), RefKL: in[inRefKL],
		Desirable: in[inDesirable], Present: in[inPresent], KLPresent: in[inKLPresent],
	}), p
}

// klGraph is the KL pass of a micro-batched step: the policy's summed KL-pair log-probs
// [B] of one micro-batch (whole-batch layout inputs), forward only.
func (s *runState) klGraph(ctx *context.Context, in []*graph.Node) []*graph.Node {
	ctx.SetTraining(in[0].Graph(), true) // as in the step that follows (LoRA dropout)
	_, kl := s.net.TokenLogProbs(ctx, seqInputs(in[inTarget:]), seqInputs(in[inKL:]))
	return []*graph.Node{perSlotSum(kl, in[inKL+inSlots], s.shape.BatchSize)}
}

func metricNodes(out LossOutputs) []*graph.Node {
	return []*graph.Node{out.Loss, out.KL, out.ChosenRewardSum, out.ChosenCount, out.RejectedRewardSum, out.RejectedCount}
}

func (s *runState) evalGraph(ctx *context.Context, in []*graph.Node) []*graph.Node {
	return metricNodes(s.lossGraph(ctx, in))
}

// accumulatorScope holds the gradient sums of GradAccum micro-batches.
const accumulatorScope = "/grad_accum"

// stepGraph builds a training step: one pass over a whole KTO batch, or (micro) one
// micro-batch's gradient pass. With apply false it adds the gradients to accumulators; with
// apply true it adds the accumulated and current gradients, divides by GradAccum (the
// micro-batches' loss shares already add up to their batch's loss), clips their global
// norm, applies AdamW and clears the accumulators. Outputs: the loss metrics and the
// gradient norm before clipping (0 when not applying).
func (s *runState) stepGraph(apply, micro bool) func(ctx *context.Context, in []*graph.Node) []*graph.Node {
	return func(ctx *context.Context, in []*graph.Node) []*graph.Node {
		g := in[0].Graph()
		ctx.SetTraining(g, true) // LoRA dropout
		out, pass := s.lossPass(ctx, in, micro)
		metrics := metricNodes(out)
		return append(metrics, s.updateGraph(ctx, pass.grads(out.Loss), apply))
	}
}

// updateGraph ends a step graph: with apply false it adds grads (the trainable variables in
// use, in the optimizer's order) to the accumulators; with apply true it adds the
// accumulated ones, divides by GradAccum, clips the global norm, applies AdamW and clears
// the accumulators. It returns the gradient norm before clipping (0 when not applying).
func (s *runState) updateGraph(ctx *context.Context, grads []*graph.Node, apply bool) *graph.Node {
	g := grads[0].Graph()
	accum := s.opts.GradAccum
	if s.passesPerStep() > 1 {
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
		return graph.ScalarZero(g, dtypes.Float32)
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
	s.optim.UpdateGraphWithGradients(ctx, grads, dtypes.Float32)
	return norm
}
