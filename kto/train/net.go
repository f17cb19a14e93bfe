package train

import (
	"math"
	"strconv"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/gomlx/gomlx/pkg/ml/layers"
)

// Net is how a forward pass is built: the model's shape, the dtype its frozen weights and
// matrix products use, and the LoRA adapter. Norms, softmax, log-sum-exp and everything the
// loss sees are float32 whatever DType says; a BFloat16 product is converted back to
// float32 before anything adds to it.
type Net struct {
	Config ModelConfig
	// DType of the matrix products: Float32 (the zero value means it) or BFloat16.
	DType dtypes.DType
	// LoRA is the adapter (Rank 0: none). AdapterOff builds the base model's forward with
	// an adapter present (the reference model of a LoRA run, as TRL disables the adapter).
	LoRA       LoRAConfig
	AdapterOff bool
	// HeadChunk > 0 computes the LM head's log-probs over vocabulary chunks of this many ids
	// and recomputes them in the backward pass, never holding [positions × vocab] logits
	// (head.go); 0: one [positions × vocab] product, kept for the backward pass.
	HeadChunk int
}

// TokenLogProbs is Net{Config: c}.TokenLogProbs: float32, no adapter.
func (c ModelConfig) TokenLogProbs(ctx *context.Context, target, kl SeqInputs) (targetLogProbs, klLogProbs *graph.Node) {
	return Net{Config: c}.TokenLogProbs(ctx, target, kl)
}

func (n Net) computeDType() dtypes.DType {
	if n.DType == dtypes.InvalidDType {
		return dtypes.Float32
	}
	return n.DType
}

// matmul is linear(x, w) in the compute dtype, returned as float32.
func (n Net) matmul(x, w *graph.Node) *graph.Node {
	dt := n.computeDType()
	if x.DType() != dt {
		x = graph.ConvertDType(x, dt)
	}
	if w.DType() != dt {
		w = graph.ConvertDType(w, dt)
	}
	y := linear(x, w)
	if y.DType() != dtypes.Float32 {
		y = graph.ConvertDType(y, dtypes.Float32)
	}
	return y
}

// proj applies the linear module at scope (a weight [out, in]) to x, plus the LoRA update
// (α/r)·B·A·dropout(x) when the module is a target and the adapter is on (PEFT's
// lora.Linear.forward, in float32).
func (n Net) proj(ctx *context.Context, x *graph.Node, scope, module string) *graph.Node {
	g := x.Graph()
	y := n.matmul(x, weight(ctx, g, scope))
	if n.AdapterOff || !n.LoRA.Enabled() || !n.LoRA.Targets(module) {
		return y
	}
	a, b := loraWeights(ctx, g, scope)
	xa := layers.DropoutStatic(ctx, x, n.LoRA.Dropout)
	return graph.Add(y, graph.MulScalar(linear(linear(xa, a), b), n.LoRA.Scale()))
}

// vec is a norm weight as float32.
func vec(ctx *context.Context, g *graph.Graph, scope string) *graph.Node {
	w := weight(ctx, g, scope)
	if w.DType() != dtypes.Float32 {
		w = graph.ConvertDType(w, dtypes.Float32)
	}
	return w
}

// linear applies x[..., in] · wᵀ for w [out, in] (PyTorch's nn.Linear). Contracting w's
// last axis is also the operand order the CPU backend's matrix product takes without a copy.
func linear(x, w *graph.Node) *graph.Node {
	return dot(x, []int{x.Rank() - 1}, nil, w, []int{1}, nil)
}

// rmsNorm is Mistral's RMSNorm: x / sqrt(mean(x²) + eps) · w.
func rmsNorm(x, w *graph.Node, eps float64) *graph.Node {
	variance := graph.ReduceAndKeep(graph.Square(x), graph.ReduceMean, -1)
	// Div by Sqrt rather than Mul by Rsqrt: GomlX v0.26 has no gradient for Rsqrt.
	normed := graph.Div(x, graph.Sqrt(graph.AddScalar(variance, eps)))
	// Broadcasting needs equal ranks: w as [1, …, 1, d].
	dims := make([]int, x.Rank())
	for i := range dims {
		dims[i] = 1
	}
	dims[len(dims)-1] = w.Shape().Dimensions[0]
	return graph.Mul(normed, graph.Reshape(w, dims...))
}

// maskedScore is added to the scores of keys a query may not see: exp underflows to 0.
const maskedScore = -1e9

// ropeTables returns cos and sin [..., headDim] for the positions [...], as Hugging Face's
// MistralRotaryEmbedding: angle = position · θ^(−2i/d), the half table repeated twice.
func ropeTables(positionIDs *graph.Node, headDim int, theta float64) (cos, sin *graph.Node) {
	g := positionIDs.Graph()
	invFreq := make([]float32, headDim)
	for i := range headDim / 2 {
		f := float32(1 / math.Pow(theta, float64(2*i)/float64(headDim)))
		invFreq[i], invFreq[i+headDim/2] = f, f
	}
	dims := positionIDs.Shape().Dimensions
	pos := graph.InsertAxes(graph.ConvertDType(positionIDs, dtypes.Float32), -1)
	freqDims := make([]int, len(dims)+1)
	for i := range freqDims {
		freqDims[i] = 1
	}
	freqDims[len(dims)] = headDim
	angles := graph.Mul(pos, graph.Reshape(graph.Const(g, invFreq), freqDims...))
	return graph.Cos(angles), graph.Sin(angles)
}

// rotateHalfMatrix is the constant R with x·R = rotate_half(x) = concat(−x₂, x₁). A matrix
// product, because the CPU backend cannot differentiate Slice.
func rotateHalfMatrix(g *graph.Graph, headDim int) *graph.Node {
	half := headDim / 2
	m := make([]float32, headDim*headDim)
	for j := range half {
		m[(j+half)*headDim+j] = -1 // output j takes −x[j+half]
		m[j*headDim+j+half] = 1    // output j+half takes x[j]
	}
	return graph.Reshape(graph.Const(g, m), headDim, headDim)
}

// applyRope rotates x [..., headDim]; cos and sin already broadcast to x's rank.
func applyRope(x, cos, sin, rot *graph.Node) *graph.Node {
	rotated := dot(x, []int{x.Rank() - 1}, nil, rot, []int{0}, nil)
	return graph.Add(graph.Mul(x, cos), graph.Mul(rotated, sin))
}

// SeqInputs are the graph inputs of one group of sequences in block layout (layout.go):
// the tokens InputIDs and PositionIDs [N] int32, N a multiple of the block size B, each
// sequence starting a block; the attention pairs PairQuery [P] int32 (the group's block
// indexes) and PairKey [P] int32 (key block indexes) with PairBias [P, B, B] float32 (0 where
// query i of the query block may see key j of the key block, a large negative number
// elsewhere); the scored positions LabelPos [C] int32 (token indexes) and the ids they
// predict, Labels [C] int32.
type SeqInputs struct {
	InputIDs, PositionIDs *graph.Node
	PairQuery, PairKey    *graph.Node
	PairBias              *graph.Node
	LabelPos, Labels      *graph.Node
}

// TokenLogProbs runs the decoder over two groups of sequences, the targets and the KL pairs,
// and returns log p(Labels[i] | the tokens of its sequence up to LabelPos[i]) [C] float32 for
// each group. The KL group's PairKey and LabelPos index the target group's blocks and tokens
// followed by its own: a KL pair's prefix shared with a target is not computed twice. Only
// the scored positions go through the LM head, whose [·, vocab] logits dominate memory and
// time (prompts are not scored).
func (n Net) TokenLogProbs(ctx *context.Context, target, kl SeqInputs) (targetLogProbs, klLogProbs *graph.Node) {
	ht, hk := n.hiddenStates(ctx, target, kl)
	return n.labelLogProbs(ctx, ht, target.LabelPos, target.Labels),
		n.labelLogProbs(ctx, graph.Concatenate([]*graph.Node{ht, hk}, 0), kl.LabelPos, kl.Labels)
}

// groupNodes are one group's per-graph constants.
type groupNodes struct {
	n, numBlocks           int
	cosQ, sinQ, cosK, sinK *graph.Node
	bias, pairQ, pairK     *graph.Node
}

func (c ModelConfig) groupNodes(in SeqInputs) groupNodes {
	n := in.InputIDs.Shape().Dimensions[0]
	numPairs, bs := in.PairBias.Shape().Dimensions[0], in.PairBias.Shape().Dimensions[1]
	hd, nkv := c.headDim(), c.NumKeyValueHeads
	group := c.NumAttentionHeads / nkv
	cos, sin := ropeTables(in.PositionIDs, hd, c.RopeTheta)
	return groupNodes{
		n: n, numBlocks: n / bs,
		cosQ: graph.Reshape(cos, n, 1, 1, hd), sinQ: graph.Reshape(sin, n, 1, 1, hd),
		cosK: graph.Reshape(cos, n, 1, hd), sinK: graph.Reshape(sin, n, 1, hd),
		// One full-size bias for all layers: adding a size-1-axes tensor broadcasts through a
		// slow generic iterator on the CPU backend.
		bias:  graph.BroadcastToDims(graph.Reshape(in.PairBias, numPairs, 1, bs, 1, bs), numPairs, nkv, bs, group, bs),
		pairQ: graph.Reshape(in.PairQuery, numPairs, 1),
		pairK: graph.Reshape(in.PairKey, numPairs, 1),
	}
}

// layerStack holds what every decoder layer of one graph shares: the groups' RoPE tables,
// attention biases and pair indexes, and the rotate-half matrix.
type layerStack struct {
	gt, gk groupNodes
	rot    *graph.Node
	scale  float64
	bs     int
	hasKL  bool
}

// newLayerStack builds the shared nodes; kl nil: the targets only (a gradient pass that
// takes the KL pairs' log-probs as an input).
func (n Net) newLayerStack(target SeqInputs, kl *SeqInputs) *layerStack {
	c := n.Config
	g := target.InputIDs.Graph()
	st := &layerStack{gt: c.groupNodes(target), rot: rotateHalfMatrix(g, c.headDim()),
		scale: 1 / math.Sqrt(float64(c.headDim())), bs: target.PairBias.Shape().Dimensions[1]}
	if kl != nil {
		st.gk, st.hasKL = c.groupNodes(*kl), true
	}
	return st
}

// embed is the token embedding of a group, as float32 [N, d].
func (n Net) embed(ctx *context.Context, in SeqInputs, gn groupNodes) *graph.Node {
	g := in.InputIDs.Graph()
	return toF32(graph.Gather(weight(ctx, g, "/model/embed_tokens"), graph.Reshape(in.InputIDs, gn.n, 1)))
}

// hiddenStates runs the decoder layers over both groups: [N, hidden] each.
func (n Net) hiddenStates(ctx *context.Context, target, kl SeqInputs) (ht, hk *graph.Node) {
	st := n.newLayerStack(target, &kl)
	ht, hk = n.embed(ctx, target, st.gt), n.embed(ctx, kl, st.gk)
	for l := range n.Config.NumHiddenLayers {
		ht, hk = n.layer(ctx, l, st, ht, hk)
	}
	return ht, hk
}

// layer runs decoder layer l over the targets ht and, when the stack has a KL group, the KL
// pairs hk, whose queries also see the targets' keys (shared prefixes). Without one, hk is
// ignored and returned nil.
func (n Net) layer(ctx *context.Context, l int, st *layerStack, ht, hk *graph.Node) (*graph.Node, *graph.Node) {
	c := n.Config
	g := ht.Graph()
	hd := c.headDim()
	nh, nkv := c.NumAttentionHeads, c.NumKeyValueHeads
	group := nh / nkv
	bs, rot, scale := st.bs, st.rot, st.scale
	p := "/model/layers/" + strconv.Itoa(l)
	// Blocks are gathered once per pair (several times each), so they are transposed
	// before, into the [batch, free, contracted] order the CPU backend's matrix product
	// wants (it copies operands in any other order): q [blocks, KV, B, G, hd],
	// k [blocks, KV, B, hd], v [blocks, KV, hd, B].
	qkv := func(h *graph.Node, gn groupNodes) (q, k, v *graph.Node) {
		x := rmsNorm(h, vec(ctx, g, p+"/input_layernorm"), c.RMSNormEps)
		// Query head j uses KV head j / group, as Hugging Face's repeat_kv.
		q = graph.Reshape(n.proj(ctx, x, p+"/self_attn/q_proj", "q_proj"), gn.n, nkv, group, hd)
		k = graph.Reshape(n.proj(ctx, x, p+"/self_attn/k_proj", "k_proj"), gn.n, nkv, hd)
		v = graph.Reshape(n.proj(ctx, x, p+"/self_attn/v_proj", "v_proj"), gn.numBlocks, bs, nkv, hd)
		q = graph.Reshape(graph.MulScalar(applyRope(q, gn.cosQ, gn.sinQ, rot), scale), gn.numBlocks, bs, nkv, group, hd)
		k = graph.Reshape(applyRope(k, gn.cosK, gn.sinK, rot), gn.numBlocks, bs, nkv, hd)
		return graph.TransposeAllAxes(q, 0, 2, 1, 3, 4), graph.TransposeAllAxes(k, 0, 2, 1, 3), graph.TransposeAllAxes(v, 0, 2, 3, 1)
	}
	rest := func(h, att *graph.Node) *graph.Node {
		h = graph.Add(h, n.proj(ctx, att, p+"/self_attn/o_proj", "o_proj"))
		x := rmsNorm(h, vec(ctx, g, p+"/post_attention_layernorm"), c.RMSNormEps)
		gate := n.proj(ctx, x, p+"/mlp/gate_proj", "gate_proj")
		up := n.proj(ctx, x, p+"/mlp/up_proj", "up_proj")
		return graph.Add(h, n.proj(ctx, graph.Mul(graph.Mul(gate, graph.Sigmoid(gate)), up), p+"/mlp/down_proj", "down_proj"))
	}
	gt, gk := st.gt, st.gk
	qt, kt, vt := qkv(ht, gt)
	attT := blockAttention(graph.Gather(qt, gt.pairQ), graph.Gather(kt, gt.pairK), graph.Gather(vt, gt.pairK), gt.bias, gt.pairQ, gt.numBlocks)
	if !st.hasKL {
		return rest(ht, attT), nil
	}
	qk, kk, vk := qkv(hk, gk)
	// KL queries see the targets' blocks (shared prefixes) and their own.
	kAll, vAll := graph.Concatenate([]*graph.Node{kt, kk}, 0), graph.Concatenate([]*graph.Node{vt, vk}, 0)
	attK := blockAttention(graph.Gather(qk, gk.pairQ), graph.Gather(kAll, gk.pairK), graph.Gather(vAll, gk.pairK), gk.bias, gk.pairQ, gk.numBlocks)
	return rest(ht, attT), rest(hk, attK)
}

// blockAttention is softmax(q·k + bias)·v where a query's keys are spread over the pairs of
// its block. q [P, KV, B, G, hd], k [P, KV, B, hd] and v [P, KV, hd, B] are gathered per
// pair; bias is [P, KV, B, G, B]; pairQ [P, 1] the query block of each pair. Each pair gives
// partial numerators and denominators, shifted by the query's maximum score over all its
// pairs (a constant for the gradient, as in graph.Softmax), and the partials are summed per
// block: flash attention's exact combination. Returns [numBlocks·B, H·hd].
func blockAttention(q, k, v, bias, pairQ *graph.Node, numBlocks int) *graph.Node {
	g := q.Graph()
	d := q.Shape().Dimensions
	numPairs, nkv, bs, group, hd := d[0], d[1], d[2], d[3], d[4]
	// scores [P, KV, B, G, B]: batch (pair, kv head), contract the head dim.
	scores := graph.Add(dot(q, []int{4}, []int{0, 1}, k, []int{3}, []int{0, 1}), bias)
	pairMax := graph.StopGradient(graph.ReduceMax(scores, -1)) // [P, KV, B, G]
	lowest := graph.BroadcastToDims(graph.Infinity(g, dtypes.Float32, -1), numBlocks, nkv, bs, group)
	blockMax := graph.ScatterMax(lowest, pairQ, pairMax, false, false)
	shift := graph.StopGradient(graph.Reshape(graph.Gather(blockMax, pairQ), numPairs, nkv, bs, group, 1))
	e := graph.Exp(graph.Sub(scores, shift))
	// [P, KV, B, G, hd]: batch (pair, kv head), contract the keys.
	num := dot(e, []int{4}, []int{0, 1}, v, []int{3}, []int{0, 1})
	num = graph.ScatterSum(graph.Zeros(g, shapes.Make(dtypes.Float32, numBlocks, nkv, bs, group, hd)), pairQ, num, false, false)
	den := graph.ScatterSum(graph.Zeros(g, shapes.Make(dtypes.Float32, numBlocks, nkv, bs, group)), pairQ,
		graph.ReduceSum(e, -1), false, false)
	// A padding block is in no pair: 0/1. Elsewhere den ≥ 1 (the maximum contributes exp(0)).
	den = graph.Where(graph.Equal(den, graph.ScalarZero(g, dtypes.Float32)), graph.OnesLike(den), den)
	out := graph.Div(num, graph.Reshape(den, numBlocks, nkv, bs, group, 1))
	// [blocks, KV, B, G, hd] → [blocks, B, KV, G, hd] → [N, H·hd]
	return graph.Reshape(graph.TransposeAllAxes(out, 0, 2, 1, 3, 4), numBlocks*bs, nkv*group*hd)
}

// labelLogProbs applies the final norm and the LM head to h [N, d] at labelPos [C] and
// returns log p(labels) [C]: logit[label] − logsumexp(logits), in float32. The label's logit
// is a row of the head gathered and dotted with the state, not a one-hot mask over the
// vocabulary. The head [vocab, d] is lm_head, or the token embedding when tied.
func (n Net) labelLogProbs(ctx *context.Context, h, labelPos, labels *graph.Node) *graph.Node {
	g := h.Graph()
	nl := labelPos.Shape().Dimensions[0]
	x := n.headStates(ctx, h, labelPos) // [C, d]
	headScope := n.Config.headScope()
	head := weight(ctx, g, headScope) // [vocab, d]
	if n.HeadChunk > 0 {
		return n.chunkedLabelLogProbs(x, head, labels, ctx.InAbsPath(headScope).GetVariable(weightName).Trainable)
	}
	logits := n.matmul(x, head)
	var picked *graph.Node
	if n.computeDType() == dtypes.Float32 {
		rows := toF32(graph.Gather(head, graph.Reshape(labels, nl, 1)))
		picked = graph.ReduceSum(graph.Mul(x, rows), -1)
	} else {
		// The picked logit must be the one inside the log-sum-exp, rounded the same way.
		picked = graph.Reshape(graph.Gather(logits, graph.Concatenate([]*graph.Node{
			graph.Reshape(graph.Iota(g, shapes.Make(dtypes.Int32, nl), 0), nl, 1),
			graph.Reshape(graph.ConvertDType(labels, dtypes.Int32), nl, 1)}, 1)), nl)
	}
	// Shift by the row maximum (a constant for the gradient) before Exp.
	maxLogit := graph.StopGradient(graph.ReduceAndKeep(logits, graph.ReduceMax, -1))
	logSumExp := graph.Add(graph.Log(graph.ReduceSum(graph.Exp(graph.Sub(logits, maxLogit)), -1)), graph.Reshape(maxLogit, nl))
	return graph.Sub(picked, logSumExp)
}

// headStates are the LM head's inputs: the final norm of h [N, d] at labelPos [C], [C, d].
func (n Net) headStates(ctx *context.Context, h, labelPos *graph.Node) *graph.Node {
	nl := labelPos.Shape().Dimensions[0]
	x := graph.Gather(h, graph.Reshape(labelPos, nl, 1))
	return rmsNorm(x, vec(ctx, h.Graph(), "/model/norm"), n.Config.RMSNormEps)
}

// headScope is the LM head's variable scope: lm_head, or the token embedding when tied.
func (c ModelConfig) headScope() string {
	if c.TieWordEmbeddings {
		return "/model/embed_tokens"
	}
	return "/lm_head"
}

// toF32 converts x to float32 when it is not already.
func toF32(x *graph.Node) *graph.Node {
	if x.DType() == dtypes.Float32 {
		return x
	}
	return graph.ConvertDType(x, dtypes.Float32)
}
