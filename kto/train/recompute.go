package train

import (
	"strconv"
	"strings"

	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/ml/context"
)

// Per-layer recomputation (gradient checkpointing). GomlX v0.26 has no rematerialisation
// API, and autodiff keeps every forward tensor a backward rule reads until the backward pass
// reaches it: ≈176 KB per token per layer for Mistral-7B. With recomputation the forward
// pass cuts each decoder layer's output out of autodiff (StopGradient), so the only forward
// tensors the backward pass reads are the layers' inputs (one [tokens, hidden] float32 each);
// the backward pass is then written out layer by layer: for l = L−1 … 0 the layer is built
// again from its stored input and differentiated alone with graph.Gradient against the
// incoming cotangent v (∂⟨layer(h), v⟩/∂h and /∂θ_l are the layer's vector-Jacobian
// products), which gives the cotangent of its input and its weights' gradients. A backend
// frees a tensor after its last reader, so one layer's activations live at a time.
//
// The recomputed layer must not be merged with the forward one (XLA's common-subexpression
// elimination would, the inputs and ops being identical) nor scheduled before its cotangent
// exists: its input is h + 0·v[0,0], which depends on v (XLA's algebraic simplifier folds
// x·0 only for integers, NaN being possible in floats; untested on XLA here: no GPU). The same layers and weights run
// twice, so the results equal the stored computation's up to float32 rounding of the
// re-run (bit-identical on the CPU backend, whose kernels are deterministic). LoRA dropout
// would draw new masks in the re-run: Options refuses the combination.

// policyPass is the policy's forward over the targets (and the KL pairs when kl is non-nil:
// a whole-batch step) and the means to differentiate a loss built on it.
type policyPass struct {
	target, kl *graph.Node // per-token log-probs [C]; kl nil without a KL group
	// grads returns the gradients of loss with respect to the trainable variables in use,
	// in the order of ctx.BuildTrainableVariablesGradientsGraph (the optimizer's).
	grads func(loss *graph.Node) []*graph.Node
}

// buildPolicyPass builds the forward with stored activations, or with recomputation.
func (n Net) buildPolicyPass(ctx *context.Context, target SeqInputs, kl *SeqInputs, recompute bool) policyPass {
	if recompute {
		return n.recomputedPass(ctx, target, kl)
	}
	var p policyPass
	if kl != nil {
		p.target, p.kl = n.TokenLogProbs(ctx, target, *kl)
	} else {
		st := n.newLayerStack(target, nil)
		h := n.embed(ctx, target, st.gt)
		for l := range n.Config.NumHiddenLayers {
			h, _ = n.layer(ctx, l, st, h, nil)
		}
		p.target = n.labelLogProbs(ctx, h, target.LabelPos, target.Labels)
	}
	p.grads = ctx.BuildTrainableVariablesGradientsGraph
	return p
}

// recomputedPass is buildPolicyPass with per-layer recomputation (see above).
func (n Net) recomputedPass(ctx *context.Context, target SeqInputs, kl *SeqInputs) policyPass {
	c := n.Config
	g := target.InputIDs.Graph()
	st := n.newLayerStack(target, kl)
	targetOnly := *st
	targetOnly.hasKL = false

	embedded := n.embed(ctx, target, st.gt)
	var hk *graph.Node
	if kl != nil {
		hk = n.embed(ctx, *kl, st.gk)
	}
	// inputs[l] is layer l's input, the only activation kept for the backward pass.
	inputs := make([]*graph.Node, c.NumHiddenLayers+1)
	inputs[0] = graph.StopGradient(embedded)
	for l := range c.NumHiddenLayers {
		var out *graph.Node
		out, hk = n.layer(ctx, l, st, inputs[l], hk)
		inputs[l+1] = graph.StopGradient(out)
	}
	// Differentiable from the last hidden state to the loss (the head is not recomputed).
	last := graph.Identity(inputs[c.NumHiddenLayers])
	p := policyPass{target: n.labelLogProbs(ctx, last, target.LabelPos, target.Labels)}
	if kl != nil {
		// TRL scores KL pairs under no_grad: no cotangent comes back through them.
		p.kl = n.labelLogProbs(ctx, graph.Concatenate([]*graph.Node{inputs[c.NumHiddenLayers], hk}, 0), kl.LabelPos, kl.Labels)
	}

	p.grads = func(loss *graph.Node) []*graph.Node {
		var vars []*context.Variable
		for v := range ctx.IterVariables() {
			if v.Trainable && v.InUseByGraph(g) {
				vars = append(vars, v)
			}
		}
		grads := make([]*graph.Node, len(vars))
		add := func(i int, gr *graph.Node) {
			if grads[i] == nil {
				grads[i] = gr
			} else {
				grads[i] = graph.Add(grads[i], gr)
			}
		}
		// Variables outside the layers (the head, the final norm; in full fine-tuning the
		// embedding too) and the cotangent of the last hidden state, in one pass.
		layerOf := make([]int, len(vars))
		wrt := []*graph.Node{last}
		var outside []int
		for i, v := range vars {
			layerOf[i] = layerIndex(v.Scope())
			if layerOf[i] < 0 {
				outside = append(outside, i)
				wrt = append(wrt, v.ValueGraph(g))
			}
		}
		gs := graph.Gradient(loss, wrt...)
		cot := gs[0]
		for j, i := range outside {
			add(i, gs[j+1])
		}
		for l := c.NumHiddenLayers - 1; l >= 0; l-- {
			// h + 0·v[0,0]: the value of h, computed only once v exists (see above).
			first := graph.Slice(graph.StopGradient(cot), graph.AxisRange(0, 1), graph.AxisRange(0, 1))
			h := graph.Add(inputs[l], graph.MulScalar(first, 0))
			out, _ := n.layer(ctx, l, &targetOnly, h, nil)
			wrt := []*graph.Node{h}
			var mine []int
			for i := range vars {
				if layerOf[i] == l {
					mine = append(mine, i)
					wrt = append(wrt, vars[i].ValueGraph(g))
				}
			}
			gl := graph.Gradient(graph.ReduceAllSum(graph.Mul(out, graph.StopGradient(cot))), wrt...)
			cot = gl[0]
			for j, i := range mine {
				add(i, gl[j+1])
			}
		}
		// A trainable embedding (full fine-tuning) gets the cotangent of layer 0's input.
		embedVar := ctx.InAbsPath("/model/embed_tokens").GetVariable(weightName)
		for i, v := range vars {
			if v == embedVar {
				ge := graph.Gradient(graph.ReduceAllSum(graph.Mul(embedded, graph.StopGradient(cot))), v.ValueGraph(g))
				add(i, ge[0])
			}
		}
		for i, v := range vars {
			if grads[i] == nil {
				grads[i] = graph.ZerosLike(v.ValueGraph(g))
			}
		}
		return grads
	}
	return p
}

// layerIndex is the decoder layer of a variable scope "/model/layers/N/…", else −1.
func layerIndex(scope string) int {
	rest, ok := strings.CutPrefix(scope, "/model/layers/")
	if !ok {
		return -1
	}
	num, _, _ := strings.Cut(rest, "/")
	l, err := strconv.Atoi(num)
	if err != nil {
		return -1
	}
	return l
}
