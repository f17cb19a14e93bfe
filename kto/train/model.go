package train

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"os"
	"strconv"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"
)

// ModelConfig is a Mistral decoder's shape: the fields of a Hugging Face config.json for
// MistralForCausalLM (unknown fields are ignored). A zero HeadDim means HiddenSize /
// NumAttentionHeads.
type ModelConfig struct {
	VocabSize             int     `json:"vocab_size"`
	HiddenSize            int     `json:"hidden_size"`
	IntermediateSize      int     `json:"intermediate_size"`
	NumHiddenLayers       int     `json:"num_hidden_layers"`
	NumAttentionHeads     int     `json:"num_attention_heads"`
	NumKeyValueHeads      int     `json:"num_key_value_heads"`
	HeadDim               int     `json:"head_dim,omitempty"`
	RMSNormEps            float64 `json:"rms_norm_eps"`
	RopeTheta             float64 `json:"rope_theta"`
	MaxPositionEmbeddings int     `json:"max_position_embeddings"`
	// InitializerRange is the standard deviation of the normal initialisation of every
	// matrix, as in Hugging Face's MistralPreTrainedModel (0.02 when zero).
	InitializerRange float64 `json:"initializer_range,omitempty"`
	// SlidingWindow, when set, must cover the whole row: the trainer has no sliding-window
	// attention (Mistral v0.3 sets it to null).
	SlidingWindow *int `json:"sliding_window,omitempty"`
	// TieWordEmbeddings makes the LM head the transposed token embedding (Mistral: false).
	TieWordEmbeddings bool `json:"tie_word_embeddings,omitempty"`
}

// TinyPreset is the name of the small built-in model used for demos and tests.
const TinyPreset = "tiny"

// Tiny model shape: 2 layers, d=64, 4 query heads sharing 2 KV heads (grouped-query
// attention as in Mistral, which has 32 and 8), SwiGLU width 4d, Mistral's norm epsilon
// and RoPE base. Small enough to train a few hundred steps on two CPU cores.
const (
	tinyHidden       = 64
	tinyIntermediate = 256
	tinyLayers       = 2
	tinyHeads        = 4
	tinyKVHeads      = 2
	tinyRMSNormEps   = 1e-5
	tinyRopeTheta    = 1e6
	defaultInitRange = 0.02
)

// TinyConfig returns the tiny preset for a vocabulary of vocabSize ids and rows of maxLen tokens.
func TinyConfig(vocabSize, maxLen int) ModelConfig {
	return ModelConfig{
		VocabSize:             vocabSize,
		HiddenSize:            tinyHidden,
		IntermediateSize:      tinyIntermediate,
		NumHiddenLayers:       tinyLayers,
		NumAttentionHeads:     tinyHeads,
		NumKeyValueHeads:      tinyKVHeads,
		RMSNormEps:            tinyRMSNormEps,
		RopeTheta:             tinyRopeTheta,
		MaxPositionEmbeddings: maxLen,
		InitializerRange:      defaultInitRange,
	}
}

// LoadModelConfig reads a Hugging Face config.json.
func LoadModelConfig(path string) (ModelConfig, error) {
	var c ModelConfig
	data, err := os.ReadFile(path)
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("%s: %w: %v", path, ErrBadModelConfig, err)
	}
	if c.InitializerRange == 0 {
		c.InitializerRange = defaultInitRange
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// headDim is the per-head width.
func (c ModelConfig) headDim() int {
	if c.HeadDim > 0 {
		return c.HeadDim
	}
	if c.NumAttentionHeads == 0 {
		return 0
	}
	return c.HiddenSize / c.NumAttentionHeads
}

// Validate names the first field that cannot make a model.
func (c ModelConfig) Validate() error {
	bad := func(field string, v any, why string) error {
		return fmt.Errorf("%w: %s=%v %s", ErrBadModelConfig, field, v, why)
	}
	switch {
	case c.VocabSize <= 0:
		return bad("vocab_size", c.VocabSize, "must be > 0")
	case c.HiddenSize <= 0:
		return bad("hidden_size", c.HiddenSize, "must be > 0")
	case c.IntermediateSize <= 0:
		return bad("intermediate_size", c.IntermediateSize, "must be > 0")
	case c.NumHiddenLayers <= 0:
		return bad("num_hidden_layers", c.NumHiddenLayers, "must be > 0")
	case c.NumAttentionHeads <= 0:
		return bad("num_attention_heads", c.NumAttentionHeads, "must be > 0")
	case c.NumKeyValueHeads <= 0 || c.NumAttentionHeads%c.NumKeyValueHeads != 0:
		return bad("num_key_value_heads", c.NumKeyValueHeads, "must divide num_attention_heads")
	case c.HeadDim == 0 && c.HiddenSize%c.NumAttentionHeads != 0:
		return bad("hidden_size", c.HiddenSize, "must be a multiple of num_attention_heads")
	case c.headDim()%2 != 0:
		return bad("head_dim", c.headDim(), "must be even for rotary embeddings")
	case !(c.RMSNormEps > 0):
		return bad("rms_norm_eps", c.RMSNormEps, "must be > 0")
	case !(c.RopeTheta > 0):
		return bad("rope_theta", c.RopeTheta, "must be > 0")
	case !(c.InitializerRange > 0):
		return bad("initializer_range", c.InitializerRange, "must be > 0")
	}
	return nil
}

// checkRows refuses rows the model cannot attend over exactly.
func (c ModelConfig) checkRows(maxLen int) error {
	if c.MaxPositionEmbeddings > 0 && maxLen > c.MaxPositionEmbeddings {
		return fmt.Errorf("%w: max_len %d > max_position_embeddings %d", ErrBadModelConfig, maxLen, c.MaxPositionEmbeddings)
	}
	if c.SlidingWindow != nil && *c.SlidingWindow < maxLen {
		return fmt.Errorf("%w: sliding_window %d < max_len %d: sliding-window attention is not implemented",
			ErrBadModelConfig, *c.SlidingWindow, maxLen)
	}
	return nil
}

// NumParameters is the number of trainable weights.
func (c ModelConfig) NumParameters() int {
	d, hd := c.HiddenSize, c.headDim()
	perLayer := 2*d + // two RMSNorms
		d*c.NumAttentionHeads*hd*2 + // q and o
		d*c.NumKeyValueHeads*hd*2 + // k and v
		3*d*c.IntermediateSize
	n := c.VocabSize*d + c.NumHiddenLayers*perLayer + d
	if !c.TieWordEmbeddings {
		n += d * c.VocabSize
	}
	return n
}

// Variable scopes follow the Hugging Face parameter names (model.layers.0.self_attn.q_proj
// becomes /model/layers/0/self_attn/q_proj, variable "weight"), so a safetensors loader can
// map names one to one. Linear weights are stored [in, out], the transpose of PyTorch's.
const weightName = "weight"

// variableSpec is one weight: its scope, shape and whether it starts at one (norms).
type variableSpec struct {
	scope string
	dims  []int
	ones  bool
}

func (c ModelConfig) variables() []variableSpec {
	d, hd, inter := c.HiddenSize, c.headDim(), c.IntermediateSize
	specs := []variableSpec{{scope: "/model/embed_tokens", dims: []int{c.VocabSize, d}}}
	for l := range c.NumHiddenLayers {
		p := "/model/layers/" + strconv.Itoa(l)
		specs = append(specs,
			variableSpec{scope: p + "/input_layernorm", dims: []int{d}, ones: true},
			variableSpec{scope: p + "/self_attn/q_proj", dims: []int{d, c.NumAttentionHeads * hd}},
			variableSpec{scope: p + "/self_attn/k_proj", dims: []int{d, c.NumKeyValueHeads * hd}},
			variableSpec{scope: p + "/self_attn/v_proj", dims: []int{d, c.NumKeyValueHeads * hd}},
			variableSpec{scope: p + "/self_attn/o_proj", dims: []int{c.NumAttentionHeads * hd, d}},
			variableSpec{scope: p + "/post_attention_layernorm", dims: []int{d}, ones: true},
			variableSpec{scope: p + "/mlp/gate_proj", dims: []int{d, inter}},
			variableSpec{scope: p + "/mlp/up_proj", dims: []int{d, inter}},
			variableSpec{scope: p + "/mlp/down_proj", dims: []int{inter, d}},
		)
	}
	specs = append(specs, variableSpec{scope: "/model/norm", dims: []int{d}, ones: true})
	if !c.TieWordEmbeddings {
		specs = append(specs, variableSpec{scope: "/lm_head", dims: []int{d, c.VocabSize}})
	}
	return specs
}

// InitVariables creates the model's weights in ctx: matrices from N(0, InitializerRange²),
// norm scales at one, as Hugging Face initialises Mistral. Each variable draws from its own
// generator seeded by (seed, scope), so the values do not depend on creation order, and a
// frozen reference built with the same seed is bit-identical to the policy at step 0.
// Variables that already exist (loaded from a checkpoint) keep their values.
func (c ModelConfig) InitVariables(ctx *context.Context, seed uint64) {
	ctx = ctx.Checked(false)
	for _, spec := range c.variables() {
		vctx := ctx.InAbsPath(spec.scope)
		if v := vctx.GetVariable(weightName); v != nil {
			continue
		}
		n := 1
		for _, d := range spec.dims {
			n *= d
		}
		data := make([]float32, n)
		if spec.ones {
			for i := range data {
				data[i] = 1
			}
		} else {
			h := fnv.New64a()
			_, _ = h.Write([]byte(spec.scope))
			rng := rand.New(rand.NewPCG(seed, h.Sum64()))
			for i := range data {
				data[i] = float32(rng.NormFloat64() * c.InitializerRange)
			}
		}
		vctx.VariableWithValue(weightName, tensors.FromFlatDataAndDimensions(data, spec.dims...))
	}
}

// weight returns the value of the weight at scope in graph g; it panics (graph-building
// style) when InitVariables has not created it.
func weight(ctx *context.Context, g *graph.Graph, scope string) *graph.Node {
	v := ctx.InAbsPath(scope).GetVariable(weightName)
	if v == nil {
		panic(fmt.Errorf("%w: weight %s/%s missing", ErrBadModelConfig, scope, weightName))
	}
	return v.ValueGraph(g)
}

// linear applies x[..., in] · w[in, out].
func linear(x, w *graph.Node) *graph.Node {
	return dot(x, []int{x.Rank() - 1}, nil, w, []int{0}, nil)
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
func (c ModelConfig) TokenLogProbs(ctx *context.Context, target, kl SeqInputs) (targetLogProbs, klLogProbs *graph.Node) {
	ht, hk := c.hiddenStates(ctx, target, kl)
	return c.labelLogProbs(ctx, ht, target.LabelPos, target.Labels),
		c.labelLogProbs(ctx, graph.Concatenate([]*graph.Node{ht, hk}, 0), kl.LabelPos, kl.Labels)
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

// hiddenStates runs the decoder layers over both groups: [N, hidden] each.
func (c ModelConfig) hiddenStates(ctx *context.Context, target, kl SeqInputs) (ht, hk *graph.Node) {
	g := target.InputIDs.Graph()
	hd := c.headDim()
	nh, nkv := c.NumAttentionHeads, c.NumKeyValueHeads
	group := nh / nkv
	bs := target.PairBias.Shape().Dimensions[1]
	rot := rotateHalfMatrix(g, hd)
	scale := 1 / math.Sqrt(float64(hd))
	embed := weight(ctx, g, "/model/embed_tokens")
	gt, gk := c.groupNodes(target), c.groupNodes(kl)
	ht = graph.Gather(embed, graph.Reshape(target.InputIDs, gt.n, 1)) // [N, d]
	hk = graph.Gather(embed, graph.Reshape(kl.InputIDs, gk.n, 1))

	for l := range c.NumHiddenLayers {
		p := "/model/layers/" + strconv.Itoa(l)
		// Blocks are gathered once per pair (several times each), so they are transposed
		// before, into the [batch, free, contracted] order the CPU backend's matrix product
		// wants (it copies operands in any other order): q [blocks, KV, B, G, hd],
		// k [blocks, KV, B, hd], v [blocks, KV, hd, B].
		qkv := func(h *graph.Node, gn groupNodes) (q, k, v *graph.Node) {
			x := rmsNorm(h, weight(ctx, g, p+"/input_layernorm"), c.RMSNormEps)
			// Query head j uses KV head j / group, as Hugging Face's repeat_kv.
			q = graph.Reshape(linear(x, weight(ctx, g, p+"/self_attn/q_proj")), gn.n, nkv, group, hd)
			k = graph.Reshape(linear(x, weight(ctx, g, p+"/self_attn/k_proj")), gn.n, nkv, hd)
			v = graph.Reshape(linear(x, weight(ctx, g, p+"/self_attn/v_proj")), gn.numBlocks, bs, nkv, hd)
			q = graph.Reshape(graph.MulScalar(applyRope(q, gn.cosQ, gn.sinQ, rot), scale), gn.numBlocks, bs, nkv, group, hd)
			k = graph.Reshape(applyRope(k, gn.cosK, gn.sinK, rot), gn.numBlocks, bs, nkv, hd)
			return graph.TransposeAllAxes(q, 0, 2, 1, 3, 4), graph.TransposeAllAxes(k, 0, 2, 1, 3), graph.TransposeAllAxes(v, 0, 2, 3, 1)
		}
		qt, kt, vt := qkv(ht, gt)
		qk, kk, vk := qkv(hk, gk)
		attT := blockAttention(graph.Gather(qt, gt.pairQ), graph.Gather(kt, gt.pairK), graph.Gather(vt, gt.pairK), gt.bias, gt.pairQ, gt.numBlocks)
		// KL queries see the targets' blocks (shared prefixes) and their own.
		kAll, vAll := graph.Concatenate([]*graph.Node{kt, kk}, 0), graph.Concatenate([]*graph.Node{vt, vk}, 0)
		attK := blockAttention(graph.Gather(qk, gk.pairQ), graph.Gather(kAll, gk.pairK), graph.Gather(vAll, gk.pairK), gk.bias, gk.pairQ, gk.numBlocks)

		rest := func(h, att *graph.Node) *graph.Node {
			h = graph.Add(h, linear(att, weight(ctx, g, p+"/self_attn/o_proj")))
			x := rmsNorm(h, weight(ctx, g, p+"/post_attention_layernorm"), c.RMSNormEps)
			gate := linear(x, weight(ctx, g, p+"/mlp/gate_proj"))
			up := linear(x, weight(ctx, g, p+"/mlp/up_proj"))
			return graph.Add(h, linear(graph.Mul(graph.Mul(gate, graph.Sigmoid(gate)), up), weight(ctx, g, p+"/mlp/down_proj")))
		}
		ht, hk = rest(ht, attT), rest(hk, attK)
	}
	return ht, hk
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
// returns log p(labels) [C]: logit[label] − logsumexp(logits). The label's logit is a row
// of the head gathered and dotted with the state, not a one-hot mask over the vocabulary.
func (c ModelConfig) labelLogProbs(ctx *context.Context, h, labelPos, labels *graph.Node) *graph.Node {
	g := h.Graph()
	nl := labelPos.Shape().Dimensions[0]
	x := graph.Gather(h, graph.Reshape(labelPos, nl, 1)) // [C, d]
	x = rmsNorm(x, weight(ctx, g, "/model/norm"), c.RMSNormEps)
	var logits, rows *graph.Node
	if c.TieWordEmbeddings {
		embed := weight(ctx, g, "/model/embed_tokens") // [vocab, d]
		logits = dot(x, []int{1}, nil, embed, []int{1}, nil)
		rows = graph.Gather(embed, graph.Reshape(labels, nl, 1))
	} else {
		head := weight(ctx, g, "/lm_head") // [d, vocab]
		logits = linear(x, head)
		rows = graph.Gather(graph.TransposeAllAxes(head, 1, 0), graph.Reshape(labels, nl, 1))
	}
	picked := graph.ReduceSum(graph.Mul(x, rows), -1)
	// Shift by the row maximum (a constant for the gradient) before Exp.
	maxLogit := graph.StopGradient(graph.ReduceAndKeep(logits, graph.ReduceMax, -1))
	logSumExp := graph.Add(graph.Log(graph.ReduceSum(graph.Exp(graph.Sub(logits, maxLogit)), -1)), graph.Reshape(maxLogit, nl))
	return graph.Sub(picked, logSumExp)
}

// ErrBadModelConfig marks a model configuration that cannot be built or does not fit the data.
var ErrBadModelConfig = errors.New("bad model config")
