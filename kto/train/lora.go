package train

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"
)

// LoRA follows PEFT (huggingface/peft, tuners/lora/layer.py): for a target linear layer
// y = x·Wᵀ + scaling·(dropout(x)·Aᵀ)·Bᵀ with A [r, in] drawn from kaiming_uniform(a=√5),
// i.e. U(±1/√in), B [out, r] zero, scaling α/r (α/√r with rsLoRA). W stays frozen; A and B
// are float32 whatever --dtype says. They live beside W, in the same scope, as variables
// "lora_A" and "lora_B", and are saved under PEFT's keys
// base_model.model.<module path>.lora_A.weight.

// LoRA variable names within a linear module's scope.
const (
	loraAName = "lora_A"
	loraBName = "lora_B"
)

// AllLinearTargets are the linear modules of a Mistral decoder layer, the default targets
// (PEFT's "all-linear" less the LM head, which PEFT also leaves out).
var AllLinearTargets = []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

// LoRAConfig is an adapter's shape: PEFT LoraConfig's r, lora_alpha, lora_dropout,
// target_modules and use_rslora.
type LoRAConfig struct {
	Rank    int      `json:"r"`
	Alpha   float64  `json:"lora_alpha"`
	Dropout float64  `json:"lora_dropout"`
	Modules []string `json:"target_modules"`
	RSLoRA  bool     `json:"use_rslora"`
}

// Enabled reports whether there is an adapter.
func (c LoRAConfig) Enabled() bool { return c.Rank > 0 }

// Scale is PEFT's scaling: α/r, or α/√r with rsLoRA.
func (c LoRAConfig) Scale() float64 {
	if c.RSLoRA {
		return c.Alpha / math.Sqrt(float64(c.Rank))
	}
	return c.Alpha / float64(c.Rank)
}

// Targets reports whether the linear module named module ("q_proj", …) gets an adapter.
func (c LoRAConfig) Targets(module string) bool {
	return module != "" && slices.Contains(c.Modules, module)
}

// withDefaults fills what a zero field means: α = r (scaling 1), all linear layers.
func (c LoRAConfig) withDefaults() LoRAConfig {
	if !c.Enabled() {
		return LoRAConfig{}
	}
	if c.Alpha == 0 {
		c.Alpha = float64(c.Rank)
	}
	if len(c.Modules) == 0 {
		c.Modules = slices.Clone(AllLinearTargets)
	}
	return c
}

// Validate names the flag of the first field that cannot make an adapter.
func (c LoRAConfig) Validate() error {
	switch {
	case c.Rank < 0:
		return fmt.Errorf("%w: --lora-r %d must be ≥ 0", ErrBadOption, c.Rank)
	case !c.Enabled():
		return nil
	case !(c.Alpha > 0) || math.IsInf(c.Alpha, 0):
		return fmt.Errorf("%w: --lora-alpha %v must be a finite number > 0", ErrBadOption, c.Alpha)
	case !(c.Dropout >= 0 && c.Dropout < 1):
		return fmt.Errorf("%w: --lora-dropout %v must be in [0, 1)", ErrBadOption, c.Dropout)
	}
	for _, m := range c.Modules {
		if !slices.Contains(AllLinearTargets, m) {
			return fmt.Errorf("%w: --lora-targets %q: not a linear module of the model (want some of %s)",
				ErrBadOption, m, strings.Join(AllLinearTargets, ","))
		}
	}
	return nil
}

// NumParameters is the adapter's size for model c: r·(in + out) per targeted module.
func (l LoRAConfig) NumParameters(c ModelConfig) int {
	if !l.Enabled() {
		return 0
	}
	n := 0
	for _, spec := range c.variables() {
		if l.Targets(spec.module) {
			n += l.Rank * (spec.dims[0] + spec.dims[1])
		}
	}
	return n
}

// InitLoRA creates the adapter's variables in ctx as PEFT initialises them; variables that
// already exist (a checkpoint, a loaded adapter) keep their values. Each A draws from its own
// generator seeded by (seed, scope), as InitVariables does.
func (c ModelConfig) InitLoRA(ctx *context.Context, l LoRAConfig, seed uint64) {
	ctx = ctx.Checked(false)
	for _, spec := range c.variables() {
		if !l.Targets(spec.module) {
			continue
		}
		vctx := ctx.InAbsPath(spec.scope)
		out, in := spec.dims[0], spec.dims[1]
		if vctx.GetVariable(loraAName) == nil {
			h := fnv.New64a()
			_, _ = h.Write([]byte(spec.scope + "/" + loraAName))
			rng := rand.New(rand.NewPCG(seed, h.Sum64()))
			bound := 1 / math.Sqrt(float64(in)) // kaiming_uniform(a=√5): gain·√(3/in) = √(1/3)·√(3/in)
			a := make([]float32, l.Rank*in)
			for i := range a {
				a[i] = float32((2*rng.Float64() - 1) * bound)
			}
			vctx.VariableWithValue(loraAName, tensors.FromFlatDataAndDimensions(a, l.Rank, in))
		}
		if vctx.GetVariable(loraBName) == nil {
			vctx.VariableWithValue(loraBName, tensors.FromFlatDataAndDimensions(make([]float32, out*l.Rank), out, l.Rank))
		}
	}
}

// loraWeights returns A [r, in] and B [out, r] of the module at scope.
func loraWeights(ctx *context.Context, g *graph.Graph, scope string) (a, b *graph.Node) {
	vctx := ctx.InAbsPath(scope)
	va, vb := vctx.GetVariable(loraAName), vctx.GetVariable(loraBName)
	if va == nil || vb == nil {
		panic(fmt.Errorf("%w: LoRA weights of %s missing", ErrBadModelConfig, scope))
	}
	return va.ValueGraph(g), vb.ValueGraph(g)
}

// peftKey is the adapter_model.safetensors key of a LoRA matrix of the module at scope.
func peftKey(scope, matrix string) string {
	return "base_model.model." + strings.ReplaceAll(strings.TrimPrefix(scope, "/"), "/", ".") + "." + matrix + ".weight"
}
