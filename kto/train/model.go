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

// attentionBias is the additive attention mask [R, T, T]: 0 where query t may attend key s
// (s ≤ t in the same sequence), a large negative number elsewhere. Padding (segment 0)
// attends only to itself: every row keeps its diagonal, so no softmax row is empty (an
// empty row gives NaN gradients), and padding never reaches the loss.
func attentionBias(segmentIDs *graph.Node) *graph.Node {
	g := segmentIDs.Graph()
	r, t := segmentIDs.Shape().Dimensions[0], segmentIDs.Shape().Dimensions[1]
	segQ := graph.BroadcastToDims(graph.Reshape(segmentIDs, r, t, 1), r, t, t)
	segK := graph.BroadcastToDims(graph.Reshape(segmentIDs, r, 1, t), r, t, t)
	same := graph.LogicalAnd(graph.Equal(segQ, segK), graph.NotEqual(segQ, graph.ScalarZero(g, segQ.DType())))
	rowIdx := graph.Iota(g, shapes.Make(dtypes.Int32, t, t), 0)
	colIdx := graph.Iota(g, shapes.Make(dtypes.Int32, t, t), 1)
	causal := graph.BroadcastToDims(graph.Reshape(graph.GreaterOrEqual(rowIdx, colIdx), 1, t, t), r, t, t)
	diag := graph.BroadcastToDims(graph.Reshape(graph.Equal(rowIdx, colIdx), 1, t, t), r, t, t)
	allowed := graph.LogicalOr(graph.LogicalAnd(same, causal), diag)
	return graph.Where(allowed, graph.ScalarZero(g, dtypes.Float32), graph.Scalar(g, dtypes.Float32, maskedScore))
}

// maskedScore is added to the scores of keys a query may not see: exp underflows to 0.
const maskedScore = -1e9

// ropeTables returns cos and sin [R, T, headDim] for the positions, as Hugging Face's
// MistralRotaryEmbedding: angle = position · θ^(−2i/d), the half table repeated twice.
func ropeTables(positionIDs *graph.Node, headDim int, theta float64) (cos, sin *graph.Node) {
	g := positionIDs.Graph()
	invFreq := make([]float32, headDim)
	for i := range headDim / 2 {
		f := float32(1 / math.Pow(theta, float64(2*i)/float64(headDim)))
		invFreq[i], invFreq[i+headDim/2] = f, f
	}
	r, t := positionIDs.Shape().Dimensions[0], positionIDs.Shape().Dimensions[1]
	pos := graph.Reshape(graph.ConvertDType(positionIDs, dtypes.Float32), r, t, 1)
	angles := graph.Mul(pos, graph.Reshape(graph.Const(g, invFreq), 1, 1, headDim))
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

// TokenLogProbs runs the decoder on rows of packed sequences (inputIDs, positionIDs,
// segmentIDs: [R, T] int32) and returns log p(labels[i] | tokens ≤ t of t's sequence) at
// the flat positions labelPos[i] = r·T + t: [C] float32 for labelPos and labels [C] int32.
// Only those positions go through the LM head, whose [·, vocab] logits dominate memory
// and time (prompts are not scored).
func (c ModelConfig) TokenLogProbs(ctx *context.Context, inputIDs, positionIDs, segmentIDs, labelPos, labels *graph.Node) *graph.Node {
	g := inputIDs.Graph()
	r, t := inputIDs.Shape().Dimensions[0], inputIDs.Shape().Dimensions[1]
	hd := c.headDim()
	nh, nkv := c.NumAttentionHeads, c.NumKeyValueHeads
	group := nh / nkv

	embed := weight(ctx, g, "/model/embed_tokens")
	h := graph.Gather(embed, graph.Reshape(inputIDs, r, t, 1)) // [R, T, d]

	// One full-size mask for all layers: adding a size-1-axes mask broadcasts through a slow
	// generic iterator on the CPU backend.
	bias := graph.BroadcastToDims(graph.Reshape(attentionBias(segmentIDs), r, 1, t, 1, t), r, nkv, t, group, t)
	cos, sin := ropeTables(positionIDs, hd, c.RopeTheta)
	cosQ, sinQ := graph.Reshape(cos, r, t, 1, 1, hd), graph.Reshape(sin, r, t, 1, 1, hd)
	cosK, sinK := graph.Reshape(cos, r, t, 1, hd), graph.Reshape(sin, r, t, 1, hd)
	rot := rotateHalfMatrix(g, hd)
	scale := 1 / math.Sqrt(float64(hd))

	for l := range c.NumHiddenLayers {
		p := "/model/layers/" + strconv.Itoa(l)
		x := rmsNorm(h, weight(ctx, g, p+"/input_layernorm"), c.RMSNormEps)
		// Query head j uses KV head j / group, as Hugging Face's repeat_kv.
		q := graph.Reshape(linear(x, weight(ctx, g, p+"/self_attn/q_proj")), r, t, nkv, group, hd)
		k := graph.Reshape(linear(x, weight(ctx, g, p+"/self_attn/k_proj")), r, t, nkv, hd)
		v := graph.Reshape(linear(x, weight(ctx, g, p+"/self_attn/v_proj")), r, t, nkv, hd)
		q = graph.MulScalar(applyRope(q, cosQ, sinQ, rot), scale)
		k = applyRope(k, cosK, sinK, rot)
		// scores [R, KV, T, G, S]: batch (row, kv head), contract head dim.
		scores := dot(q, []int{4}, []int{0, 2}, k, []int{3}, []int{0, 2})
		probs := graph.Softmax(graph.Add(scores, bias), -1)
		// [R, KV, T, G, hd] → [R, T, KV, G, hd] → [R, T, H·hd]
		att := dot(probs, []int{4}, []int{0, 1}, v, []int{1}, []int{0, 2})
		att = graph.Reshape(graph.TransposeAllAxes(att, 0, 2, 1, 3, 4), r, t, nh*hd)
		h = graph.Add(h, linear(att, weight(ctx, g, p+"/self_attn/o_proj")))

		x = rmsNorm(h, weight(ctx, g, p+"/post_attention_layernorm"), c.RMSNormEps)
		gate := linear(x, weight(ctx, g, p+"/mlp/gate_proj"))
		up := linear(x, weight(ctx, g, p+"/mlp/up_proj"))
		h = graph.Add(h, linear(graph.Mul(graph.Mul(gate, graph.Sigmoid(gate)), up), weight(ctx, g, p+"/mlp/down_proj")))
	}
	numLabels := labelPos.Shape().Dimensions[0]
	h = graph.Gather(graph.Reshape(h, r*t, c.HiddenSize), graph.Reshape(labelPos, numLabels, 1)) // [C, d]
	h = rmsNorm(h, weight(ctx, g, "/model/norm"), c.RMSNormEps)
	var logits *graph.Node
	if c.TieWordEmbeddings {
		logits = dot(h, []int{1}, nil, embed, []int{1}, nil)
	} else {
		logits = linear(h, weight(ctx, g, "/lm_head"))
	}
	// log p(label) = logit[label] − logsumexp(logits), without materialising LogSoftmax.
	shifted := graph.Sub(logits, graph.StopGradient(graph.ReduceAndKeep(logits, graph.ReduceMax, -1)))
	logSumExp := graph.Log(graph.ReduceSum(graph.Exp(shifted), -1))
	picked := graph.ReduceSum(graph.Mul(shifted, graph.OneHot(labels, c.VocabSize, dtypes.Float32)), -1)
	return graph.Sub(picked, logSumExp)
}

// ErrBadModelConfig marks a model configuration that cannot be built or does not fit the data.
var ErrBadModelConfig = errors.New("bad model config")
