package train

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/dtypes/bfloat16"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/ktoloader/ktoloader/internal/safetensors"
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
	// Upper bounds far past any real decoder (Mistral 7B: vocab 32768, d 4096, 32 layers)
	// stop a hostile or mistyped config before it allocates anything.
	const maxDim, maxLayers, maxVocab = 1 << 17, 4096, 1 << 22
	switch {
	case c.VocabSize <= 0 || c.VocabSize > maxVocab:
		return bad("vocab_size", c.VocabSize, fmt.Sprintf("must be in [1, %d]", maxVocab))
	case c.HiddenSize > maxDim:
		return bad("hidden_size", c.HiddenSize, fmt.Sprintf("must be ≤ %d", maxDim))
	case c.IntermediateSize > 8*maxDim:
		return bad("intermediate_size", c.IntermediateSize, fmt.Sprintf("must be ≤ %d", 8*maxDim))
	case c.NumHiddenLayers > maxLayers:
		return bad("num_hidden_layers", c.NumHiddenLayers, fmt.Sprintf("must be ≤ %d", maxLayers))
	case c.NumAttentionHeads > maxDim || c.NumKeyValueHeads > maxDim:
		return bad("num_attention_heads", c.NumAttentionHeads, fmt.Sprintf("must be ≤ %d", maxDim))
	case c.HeadDim < 0 || c.HeadDim > maxDim:
		return bad("head_dim", c.HeadDim, fmt.Sprintf("must be in [0, %d] (0: hidden_size / num_attention_heads)", maxDim))
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

// numParametersF is NumParameters in float64, safe from overflow on any validated config.
func (c ModelConfig) numParametersF() float64 {
	d, hd := float64(c.HiddenSize), float64(c.headDim())
	perLayer := 2*d + d*float64(c.NumAttentionHeads)*hd*2 + d*float64(c.NumKeyValueHeads)*hd*2 + 3*d*float64(c.IntermediateSize)
	n := float64(c.VocabSize)*d + float64(c.NumHiddenLayers)*perLayer + d
	if !c.TieWordEmbeddings {
		n += d * float64(c.VocabSize)
	}
	return n
}

// NumParameters is the number of the model's weights.
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
// becomes /model/layers/0/self_attn/q_proj, variable "weight"), and every weight has
// PyTorch's shape (linear layers [out, in]), so safetensors files map one to one onto the
// variables with no transpose: a tensor is loaded as the bytes of the file.
const weightName = "weight"

// variableSpec is one weight: its scope, shape, whether it starts at one (norms), and the
// name of its linear module when it is one (a LoRA target: "q_proj", …), else "".
type variableSpec struct {
	scope  string
	dims   []int
	ones   bool
	module string
}

// hfName is the Hugging Face (safetensors) name of the weight at scope.
func hfName(scope string) string {
	return strings.ReplaceAll(strings.TrimPrefix(scope, "/"), "/", ".") + "." + weightName
}

func (c ModelConfig) variables() []variableSpec {
	d, hd, inter := c.HiddenSize, c.headDim(), c.IntermediateSize
	specs := []variableSpec{{scope: "/model/embed_tokens", dims: []int{c.VocabSize, d}}}
	for l := range c.NumHiddenLayers {
		p := "/model/layers/" + strconv.Itoa(l)
		specs = append(specs,
			variableSpec{scope: p + "/input_layernorm", dims: []int{d}, ones: true},
			variableSpec{scope: p + "/self_attn/q_proj", dims: []int{c.NumAttentionHeads * hd, d}, module: "q_proj"},
			variableSpec{scope: p + "/self_attn/k_proj", dims: []int{c.NumKeyValueHeads * hd, d}, module: "k_proj"},
			variableSpec{scope: p + "/self_attn/v_proj", dims: []int{c.NumKeyValueHeads * hd, d}, module: "v_proj"},
			variableSpec{scope: p + "/self_attn/o_proj", dims: []int{d, c.NumAttentionHeads * hd}, module: "o_proj"},
			variableSpec{scope: p + "/post_attention_layernorm", dims: []int{d}, ones: true},
			variableSpec{scope: p + "/mlp/gate_proj", dims: []int{inter, d}, module: "gate_proj"},
			variableSpec{scope: p + "/mlp/up_proj", dims: []int{inter, d}, module: "up_proj"},
			variableSpec{scope: p + "/mlp/down_proj", dims: []int{d, inter}, module: "down_proj"},
		)
	}
	specs = append(specs, variableSpec{scope: "/model/norm", dims: []int{d}, ones: true})
	if !c.TieWordEmbeddings {
		specs = append(specs, variableSpec{scope: "/lm_head", dims: []int{c.VocabSize, d}})
	}
	return specs
}

// InitVariables creates the model's weights in ctx: matrices from N(0, InitializerRange²),
// norm scales at one, as Hugging Face initialises Mistral. Each variable draws from its own
// generator seeded by (seed, scope), so the values do not depend on creation order, and a
// frozen reference built with the same seed is bit-identical to the policy at step 0.
// Variables that already exist (loaded from a checkpoint) keep their values.
func (c ModelConfig) InitVariables(ctx *context.Context, seed uint64) {
	c.initVariables(ctx, seed, dtypes.Float32)
}

// initVariables is InitVariables with the values rounded to dtype (Float32 or BFloat16):
// the frozen base of a LoRA run from random weights.
func (c ModelConfig) initVariables(ctx *context.Context, seed uint64, dtype dtypes.DType) {
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
			rng := scopeRNG(seed, spec.scope)
			for i := range data {
				data[i] = float32(rng.NormFloat64() * c.InitializerRange)
			}
		}
		if dtype == dtypes.BFloat16 {
			bf := make([]bfloat16.BFloat16, n)
			for i, f := range data {
				bf[i] = bfloat16.FromBits(safetensors.BF16FromFloat32(f))
			}
			vctx.VariableWithValue(weightName, tensors.FromFlatDataAndDimensions(bf, spec.dims...))
			continue
		}
		vctx.VariableWithValue(weightName, tensors.FromFlatDataAndDimensions(data, spec.dims...))
	}
}

// scopeRNG is the generator of one weight's initial values: seeded by (seed, scope), so
// values do not depend on creation order (InitVariables, WriteRandomModel).
func scopeRNG(seed uint64, scope string) *rand.Rand {
	h := fnv.New64a()
	_, _ = h.Write([]byte(scope))
	return rand.New(rand.NewPCG(seed, h.Sum64()))
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

// ErrBadModelConfig marks a model configuration that cannot be built or does not fit the data.
var ErrBadModelConfig = errors.New("bad model config")
