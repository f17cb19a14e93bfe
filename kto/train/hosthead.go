package train

import (
	"fmt"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"

	"github.com/ktoloader/ktoloader/internal/lmhead"
)

// The host head (Options.HostHead): on the CPU backend the LM head runs outside the graph,
// in internal/lmhead's AVX2 kernels, because the backend's matrix product is a scalar loop
// and the head's [scored positions × vocab] products are most of a small model's step. A
// whole-batch step then runs as three graphs with the head between them:
//
//  1. states: the decoder over the batch, returning the head's inputs x (the final norm
//     at the scored positions) of the targets and the KL pairs;
//  2. host: log p(label) of every scored position, and the log-sum-exps;
//  3. loss: the KTO loss and metrics from those log-probs, and its gradient g with
//     respect to the targets' token log-probs (the KL pairs' are detached, as in TRL);
//  4. host: the head's backward: dx = ∂⟨g, logp⟩/∂x and, when the head trains, dW;
//  5. update: the decoder over the targets again, differentiated through ⟨x, dx⟩ + ⟨W, dW⟩
//     (whose gradients are exactly the chain rule's through x, and dW for the head), then
//     the accumulation, clipping and AdamW of a step graph.
//
// The decoder's forward runs twice (1 and 5), the price of leaving autodiff in the middle;
// on the tiny preset it is a small part of the step. The loss, metrics and update are the
// single graph's up to float32 rounding (the head's sums run in another order):
// TestHostHeadStepEqualsGraph. Evaluation and the reference's forward use 1–3 as well.

// Inputs of the loss graph (3).
const (
	hlTargetLogProbs = iota // [C] float32
	hlTargetSlots           // [C] int32
	hlKLLogProbs
	hlKLSlots
	hlDesirable // [B] float32, as the step graph's
	hlPresent
	hlKLPresent
	hlRef
	hlRefKL
)

// HostHead modes (Options.HostHead).
const (
	HostHeadAuto = "auto" // on where it can run (the default)
	HostHeadOn   = "on"   // on, or an error naming why it cannot run
	HostHeadOff  = "off"  // the head in the graph
)

// hostHeadBlocker says why the host head cannot run for this run ("" when it can).
func (s *runState) hostHeadBlocker() string {
	headVar := s.ctx.InAbsPath(s.model.headScope()).GetVariable(weightName)
	switch {
	case !isCPU(s.backend):
		return "the backend is not the CPU's (go)"
	case s.microPasses() > 1:
		return "--micro-batch splits the batch"
	case s.opts.Recompute:
		return "--recompute"
	case s.opts.HeadChunk > 0:
		return "--head-chunk asks for the graph's chunked head"
	case s.opts.LoRA.Dropout > 0:
		return "LoRA dropout would draw new masks in the second decoder pass"
	case s.net.computeDType() != dtypes.Float32 || headVar == nil || headVar.Shape().DType != dtypes.Float32:
		return "the head is not float32"
	case !lmhead.Supported(s.model.HiddenSize):
		return fmt.Sprintf("the hidden size %d is not a multiple of 16", s.model.HiddenSize)
	}
	return ""
}

// setupHostHead decides on the host head and builds its graphs.
func (s *runState) setupHostHead() error {
	mode := s.opts.HostHead
	if mode == "" {
		mode = HostHeadAuto
	}
	if mode == HostHeadOff {
		return nil
	}
	if why := s.hostHeadBlocker(); why != "" {
		if mode == HostHeadOn {
			return fmt.Errorf("%w: --host-head on: %s", ErrBadOption, why)
		}
		return nil
	}
	s.hostHead = true
	s.statesEx = newShapedExec(s.backend, s.ctx, statesGraph(s.net))
	s.refStatesEx = newShapedExec(s.backend, s.refCtx, statesGraph(s.refNet))
	s.headLossEx = newShapedExec(s.backend, s.ctx, s.headLossGraph)
	s.slotSumEx = newShapedExec(s.backend, s.ctx, s.slotSumGraph)
	s.hostTrainEx = newShapedExec(s.backend, s.ctx, s.hostUpdateGraph(true))
	if s.opts.GradAccum > 1 {
		s.hostAccumEx = newShapedExec(s.backend, s.ctx, s.hostUpdateGraph(false))
	}
	return nil
}

// statesGraph (1): the head's inputs of the targets and the KL pairs, [C, d] each.
func statesGraph(n Net) func(ctx *context.Context, in []*graph.Node) []*graph.Node {
	return func(ctx *context.Context, in []*graph.Node) []*graph.Node {
		target, kl := seqInputs(in[inTarget:]), seqInputs(in[inKL:])
		ht, hk := n.hiddenStates(ctx, target, kl)
		return []*graph.Node{n.headStates(ctx, ht, target.LabelPos),
			n.headStates(ctx, graph.Concatenate([]*graph.Node{ht, hk}, 0), kl.LabelPos)}
	}
}

// headLossGraph (3): the metrics of metricNodes, then ∂loss/∂(targets' token log-probs).
func (s *runState) headLossGraph(_ *context.Context, in []*graph.Node) []*graph.Node {
	B := s.shape.BatchSize
	lt := in[hlTargetLogProbs]
	out := s.loss.Build(LossInputs{
		Policy: perSlotSum(lt, in[hlTargetSlots], B), Ref: in[hlRef],
		PolicyKL: graph.StopGradient(perSlotSum(in[hlKLLogProbs], in[hlKLSlots], B)), RefKL: in[hlRefKL],
		Desirable: in[hlDesirable], Present: in[hlPresent], KLPresent: in[hlKLPresent],
	})
	return append(metricNodes(out), graph.Gradient(out.Loss, lt)[0])
}

// hostUpdateGraph (5): inputs the targets' eight group arrays, dx [C, d] and, when the
// head trains, dW [vocab, d]; output the gradient norm (0 when not applying).
func (s *runState) hostUpdateGraph(apply bool) func(ctx *context.Context, in []*graph.Node) []*graph.Node {
	return func(ctx *context.Context, in []*graph.Node) []*graph.Node {
		g := in[0].Graph()
		ctx.SetTraining(g, true)
		n := s.net
		target := seqInputs(in[inTarget:])
		st := n.newLayerStack(target, nil)
		h := n.embed(ctx, target, st.gt)
		for l := range n.Config.NumHiddenLayers {
			h, _ = n.layer(ctx, l, st, h, nil)
		}
		x := n.headStates(ctx, h, target.LabelPos)
		surrogate := graph.ReduceAllSum(graph.Mul(x, graph.StopGradient(in[numGroupInputs])))
		if len(in) > numGroupInputs+1 {
			head := weight(ctx, g, n.Config.headScope())
			surrogate = graph.Add(surrogate, graph.ReduceAllSum(graph.Mul(head, graph.StopGradient(in[numGroupInputs+1]))))
		}
		return []*graph.Node{s.updateGraph(ctx, ctx.BuildTrainableVariablesGradientsGraph(surrogate), apply)}
	}
}

// hostHeadOf returns ctx's head, packed, and whether it trains; the packing is reused while
// the variable holds the same tensor (until the next update).
func (s *runState) hostHeadOf(ctx *context.Context, cache *headCache) (*lmhead.Head, bool, error) {
	v := ctx.InAbsPath(s.model.headScope()).GetVariable(weightName)
	t, err := v.Value()
	if err != nil {
		return nil, false, err
	}
	if cache.t != t {
		w := tensors.MustCopyFlatData[float32](t)
		h, err := lmhead.NewHead(w, s.model.VocabSize, s.model.HiddenSize)
		if err != nil {
			return nil, false, err
		}
		cache.t, cache.h = t, h
	}
	return cache.h, v.Trainable, nil
}

// headCache is hostHeadOf's packed head and the tensor it was packed from.
type headCache struct {
	t *tensors.Tensor
	h *lmhead.Head
}

// hostLogProbs runs (1) and (2): the token log-probs and log-sum-exps of both groups, and the
// head's inputs of the targets.
type hostPass struct {
	l             batchLayout
	xt            []float32
	lt, lseT, lk  []float32
	head          *lmhead.Head
	headTrainable bool
}

func (s *runState) hostForward(states *shapedExec, ctx *context.Context, cache *headCache, b *Batch, ref, refKL []float32) (*hostPass, error) {
	l, err := s.layout(b)
	if err != nil {
		return nil, err
	}
	outs, err := states.run(layoutDims{l.Target.Dims, l.KL.Dims}, s.batchArgs(l, b, ref, refKL))
	if err != nil {
		return nil, err
	}
	head, trainable, err := s.hostHeadOf(ctx, cache)
	if err != nil {
		return nil, err
	}
	p := &hostPass{l: l, head: head, headTrainable: trainable, xt: tensors.MustCopyFlatData[float32](outs[0])}
	xk := tensors.MustCopyFlatData[float32](outs[1])
	nt, nk := len(l.Target.Labels), len(l.KL.Labels)
	p.lt, p.lseT = make([]float32, nt), make([]float32, nt)
	p.lk = make([]float32, nk)
	head.LogProbs(p.xt, l.Target.Labels, p.lt, p.lseT)
	head.LogProbs(xk, l.KL.Labels, p.lk, make([]float32, nk))
	return p, nil
}

// hostLoss runs (1)–(3) for the policy: the pass, then the metric tensors and the targets'
// log-prob gradient (last).
func (s *runState) hostLoss(b *Batch, ref, refKL []float32) (*hostPass, []*tensors.Tensor, error) {
	p, err := s.hostForward(s.statesEx, s.ctx, &s.policyHead, b, ref, refKL)
	if err != nil {
		return nil, nil, err
	}
	bt := func(x []float32) *tensors.Tensor { return tensors.FromFlatDataAndDimensions(x, s.shape.BatchSize) }
	outs, err := s.headLossEx.run(layoutDims{p.l.Target.Dims, p.l.KL.Dims}, append(p.logProbArgs(),
		bt(b.Desirable), bt(b.Present), bt(b.KLPresent), bt(ref), bt(refKL)))
	return p, outs, err
}

// logProbArgs are the loss graph's (and slotSumGraph's) first four inputs.
func (p *hostPass) logProbArgs() []any {
	vec := func(x []float32) *tensors.Tensor { return tensors.FromFlatDataAndDimensions(x, len(x)) }
	ivec := func(x []int32) *tensors.Tensor { return tensors.FromFlatDataAndDimensions(x, len(x)) }
	return []any{vec(p.lt), ivec(p.l.Target.Slots), vec(p.lk), ivec(p.l.KL.Slots)}
}

// hostStep is stepBatch's whole-batch step with the host head.
func (s *runState) hostStep(b *Batch, ref, refKL []float32, apply bool) ([]float64, error) {
	p, outs, err := s.hostLoss(b, ref, refKL)
	if err != nil {
		return nil, err
	}
	g := tensors.MustCopyFlatData[float32](outs[len(outs)-1])
	d := s.model.HiddenSize
	nt := len(p.lt)
	dx := make([]float32, nt*d)
	var dw []float32
	if p.headTrainable {
		dw = make([]float32, s.model.VocabSize*d)
	}
	p.head.Backward(p.xt, p.l.Target.Labels, p.lseT, g, dx, dw)
	args := append(groupArgs(&p.l.Target), tensors.FromFlatDataAndDimensions(dx, nt, d))
	if dw != nil {
		args = append(args, tensors.FromFlatDataAndDimensions(dw, s.model.VocabSize, d))
	}
	exec := s.hostTrainEx
	if !apply {
		exec = s.hostAccumEx
	}
	norm, err := exec.run(layoutDims{Target: p.l.Target.Dims}, args)
	if err != nil {
		return nil, err
	}
	return append(scalars(outs[:len(outs)-1]), scalars(norm)...), nil
}

// hostMetrics is an evaluation batch's metrics with the host head.
func (s *runState) hostMetrics(b *Batch, ref, refKL []float32) ([]float64, error) {
	_, outs, err := s.hostLoss(b, ref, refKL)
	if err != nil {
		return nil, err
	}
	return scalars(outs[:len(outs)-1]), nil
}

// hostRefForward is refForward with the host head: the reference's summed log-probs per
// example slot, [B] for the targets and for the KL pairs.
func (s *runState) hostRefForward(b *Batch) (logp, logpKL []float32, err error) {
	zero := make([]float32, s.shape.BatchSize)
	p, err := s.hostForward(s.refStatesEx, s.refCtx, &s.refHead, b, zero, zero)
	if err != nil {
		return nil, nil, err
	}
	// Summed by the policy's graph operation (perSlotSum), so that a policy equal to the
	// reference has a log-ratio of exactly 0.
	outs, err := s.slotSumEx.run(layoutDims{p.l.Target.Dims, p.l.KL.Dims}, p.logProbArgs())
	if err != nil {
		return nil, nil, err
	}
	return tensors.MustCopyFlatData[float32](outs[0]), tensors.MustCopyFlatData[float32](outs[1]), nil
}

// slotSumGraph: the token log-probs of both groups (the loss graph's first four inputs)
// summed per example slot, [B] each.
func (s *runState) slotSumGraph(_ *context.Context, in []*graph.Node) []*graph.Node {
	B := s.shape.BatchSize
	return []*graph.Node{perSlotSum(in[hlTargetLogProbs], in[hlTargetSlots], B), perSlotSum(in[hlKLLogProbs], in[hlKLSlots], B)}
}
