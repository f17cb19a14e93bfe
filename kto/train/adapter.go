package train

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/dtypes/bfloat16"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/internal/safetensors"
)

// PEFT's adapter files.
const (
	AdapterConfigFile  = "adapter_config.json"
	AdapterWeightsFile = "adapter_model.safetensors"
)

// peftConfig is adapter_config.json as PEFT's LoraConfig.to_dict writes it, with the fields
// vLLM reads (r, lora_alpha, target_modules) and those it refuses left at their off values
// (modules_to_save null, use_dora false).
type peftConfig struct {
	AlphaPattern        map[string]any `json:"alpha_pattern"`
	AutoMapping         any            `json:"auto_mapping"`
	BaseModelNameOrPath string         `json:"base_model_name_or_path"`
	Bias                string         `json:"bias"`
	FanInFanOut         bool           `json:"fan_in_fan_out"`
	InferenceMode       bool           `json:"inference_mode"`
	InitLoraWeights     bool           `json:"init_lora_weights"`
	LayersPattern       any            `json:"layers_pattern"`
	LayersToTransform   any            `json:"layers_to_transform"`
	LoraAlpha           float64        `json:"lora_alpha"`
	LoraDropout         float64        `json:"lora_dropout"`
	ModulesToSave       any            `json:"modules_to_save"`
	PeftType            string         `json:"peft_type"`
	R                   int            `json:"r"`
	RankPattern         map[string]any `json:"rank_pattern"`
	Revision            any            `json:"revision"`
	TargetModules       []string       `json:"target_modules"`
	TaskType            string         `json:"task_type"`
	UseDora             bool           `json:"use_dora"`
	UseRSLoRA           bool           `json:"use_rslora"`
}

// ReadAdapterConfig reads a PEFT LoRA adapter's config, refusing what this trainer cannot
// apply exactly (DoRA, biases, per-module ranks, fan_in_fan_out, modules_to_save).
func ReadAdapterConfig(dir string) (LoRAConfig, error) {
	path := filepath.Join(dir, AdapterConfigFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return LoRAConfig{}, fmt.Errorf("%w: adapter: %v", ErrBadOption, err)
	}
	var pc peftConfig
	if err := json.Unmarshal(data, &pc); err != nil {
		return LoRAConfig{}, fmt.Errorf("%w: %s: %v", ErrBadOption, path, err)
	}
	refuse := func(what string) (LoRAConfig, error) {
		return LoRAConfig{}, fmt.Errorf("%w: %s: %s is not supported", ErrBadOption, path, what)
	}
	switch {
	case pc.PeftType != "" && pc.PeftType != "LORA":
		return refuse("peft_type " + pc.PeftType)
	case pc.UseDora:
		return refuse("use_dora")
	case pc.Bias != "" && pc.Bias != "none":
		return refuse("bias " + pc.Bias)
	case pc.FanInFanOut:
		return refuse("fan_in_fan_out")
	case len(pc.RankPattern) > 0 || len(pc.AlphaPattern) > 0:
		return refuse("rank_pattern/alpha_pattern")
	case pc.ModulesToSave != nil:
		return refuse("modules_to_save")
	case pc.LayersToTransform != nil:
		return refuse("layers_to_transform")
	case pc.R <= 0:
		return LoRAConfig{}, fmt.Errorf("%w: %s: r %d must be > 0", ErrBadOption, path, pc.R)
	}
	l := LoRAConfig{Rank: pc.R, Alpha: pc.LoraAlpha, Dropout: pc.LoraDropout, Modules: pc.TargetModules, RSLoRA: pc.UseRSLoRA}
	if err := l.Validate(); err != nil {
		return l, fmt.Errorf("%s: %w", path, err)
	}
	return l, nil
}

// loraVariables lists the adapter's variables in the order of the model's modules: scope,
// PEFT key, variable.
type loraVar struct {
	key string
	v   *context.Variable
}

func (c ModelConfig) loraVariables(ctx *context.Context, l LoRAConfig) ([]loraVar, error) {
	var out []loraVar
	for _, spec := range c.variables() {
		if !l.Targets(spec.module) {
			continue
		}
		for _, m := range []string{loraAName, loraBName} {
			v := ctx.InAbsPath(spec.scope).GetVariable(m)
			if v == nil {
				return nil, fmt.Errorf("%w: LoRA weight %s/%s missing", ErrBadModelConfig, spec.scope, m)
			}
			out = append(out, loraVar{key: peftKey(spec.scope, m), v: v})
		}
	}
	return out, nil
}

// LoadAdapter creates the adapter's variables in ctx from a PEFT adapter_model.safetensors,
// checking every key, shape and dtype against the model and l.
func LoadAdapter(ctx *context.Context, backend backends.Backend, dir string, c ModelConfig, l LoRAConfig) error {
	path := filepath.Join(dir, AdapterWeightsFile)
	f, err := safetensors.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	want := map[string]bool{}
	ctx = ctx.Checked(false)
	for _, spec := range c.variables() {
		if !l.Targets(spec.module) {
			continue
		}
		out, in := spec.dims[0], spec.dims[1]
		for _, m := range []struct {
			name string
			dims []int
		}{{loraAName, []int{l.Rank, in}}, {loraBName, []int{out, l.Rank}}} {
			key := peftKey(spec.scope, m.name)
			want[key] = true
			info, ok := f.Info(key)
			if !ok {
				return fmt.Errorf("%w: %s: tensor %s missing", ErrWeights, path, key)
			}
			if !slices.Equal(info.Shape, m.dims) {
				return fmt.Errorf("%w: %s: tensor %s has shape %v, want %v", ErrWeights, path, key, info.Shape, m.dims)
			}
			data, err := f.Data(key)
			if err != nil {
				return err
			}
			t, err := tensorFromBytes(backend, data, info.DType, dtypes.Float32, m.dims)
			if err != nil {
				return fmt.Errorf("%s: tensor %s: %w", path, key, err)
			}
			// Through the host: the variable must not share the mapping closed below.
			t = tensors.FromFlatDataAndDimensions(tensors.MustCopyFlatData[float32](t), m.dims...)
			ctx.InAbsPath(spec.scope).VariableWithValue(m.name, t)
		}
	}
	for _, info := range f.Tensors() {
		if !want[info.Name] {
			return fmt.Errorf("%w: %s: tensor %s is not a LoRA weight of this model and config", ErrWeights, path, info.Name)
		}
	}
	return nil
}

// SaveAdapter writes ctx's adapter as PEFT does (save_pretrained): adapter_config.json and
// adapter_model.safetensors with float32 lora_A [r, in] / lora_B [out, r] under
// base_model.model.… keys and metadata {"format": "pt"}. base names the base model for
// base_model_name_or_path.
func SaveAdapter(dir string, ctx *context.Context, c ModelConfig, l LoRAConfig, base string) error {
	vars, err := c.loraVariables(ctx, l)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ts := make([]safetensors.Tensor, len(vars))
	for i, lv := range vars {
		ts[i] = safetensors.Tensor{Name: lv.key, DType: safetensors.F32, Shape: lv.v.Shape().Dimensions,
			Data: float32Bytes(tensors.MustCopyFlatData[float32](lv.v.MustValue()))}
	}
	if err := safetensors.WriteFile(filepath.Join(dir, AdapterWeightsFile), ts, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	modules := slices.Clone(l.Modules)
	slices.Sort(modules)
	pc := peftConfig{AlphaPattern: map[string]any{}, RankPattern: map[string]any{}, BaseModelNameOrPath: base,
		Bias: "none", InferenceMode: true, InitLoraWeights: true, LoraAlpha: l.Alpha, LoraDropout: l.Dropout,
		PeftType: "LORA", R: l.Rank, TargetModules: modules, TaskType: "CAUSAL_LM", UseRSLoRA: l.RSLoRA}
	return export.WriteAtomic(filepath.Join(dir, AdapterConfigFile), func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(pc)
	})
}

// float32Bytes is x as little-endian bytes.
func float32Bytes(x []float32) []byte {
	out := make([]byte, 4*len(x))
	for i, v := range x {
		binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
	}
	return out
}

// mergedShardBytes is the shard size of a merged model (transformers' default is 5 GB).
var mergedShardBytes int64 = 5 << 30

// SaveMerged writes a full Hugging Face model directory: config.json, and the base weights
// with every targeted W replaced by W + scaling·B·A (PEFT's merge_and_unload), in dtype
// (the base's), sharded as save_pretrained does. Tensors are produced one at a time from
// ctx's variables, so the merged model is never held in memory whole.
func SaveMerged(dir string, ctx *context.Context, c ModelConfig, l LoRAConfig, dtype dtypes.DType, configJSON []byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	st := safetensors.F32
	if dtype == dtypes.BFloat16 {
		st = safetensors.BF16
	}
	var ts []safetensors.Tensor
	for _, spec := range c.variables() {
		spec := spec
		v := ctx.InAbsPath(spec.scope).GetVariable(weightName)
		if v == nil {
			return fmt.Errorf("%w: weight %s missing", ErrBadModelConfig, spec.scope)
		}
		ts = append(ts, safetensors.Tensor{Name: hfName(spec.scope), DType: st, Shape: spec.dims,
			Write: func(w io.Writer) error {
				wv := weightAsFloat32(v.MustValue())
				if l.Enabled() && l.Targets(spec.module) {
					a, b := ctx.InAbsPath(spec.scope).GetVariable(loraAName), ctx.InAbsPath(spec.scope).GetVariable(loraBName)
					mergeLoRA(wv, tensors.MustCopyFlatData[float32](a.MustValue()), tensors.MustCopyFlatData[float32](b.MustValue()),
						spec.dims[0], spec.dims[1], l.Rank, float32(l.Scale()))
				}
				return writeValues(w, wv, st)
			}})
	}
	if _, err := safetensors.WriteDir(dir, ts, mergedShardBytes, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	return export.WriteAtomic(filepath.Join(dir, "config.json"), func(w io.Writer) error {
		_, err := w.Write(configJSON)
		return err
	})
}

// weightAsFloat32 copies a float32 or bfloat16 tensor out as float32.
func weightAsFloat32(t *tensors.Tensor) []float32 {
	if t.DType() == dtypes.Float32 {
		return tensors.MustCopyFlatData[float32](t)
	}
	bf := tensors.MustCopyFlatData[bfloat16.BFloat16](t)
	out := make([]float32, len(bf))
	for i, v := range bf {
		out[i] = v.Float32()
	}
	return out
}

// mergeLoRA adds scale·B·A to w [out, in] in place (A [r, in], B [out, r]).
func mergeLoRA(w, a, b []float32, out, in, r int, scale float32) {
	for o := range out {
		row := w[o*in : (o+1)*in]
		for k := range r {
			coef := scale * b[o*r+k]
			if coef == 0 {
				continue
			}
			ak := a[k*in : (k+1)*in]
			for i := range row {
				row[i] += coef * ak[i]
			}
		}
	}
}

// writeValues writes x in the safetensors dtype st (F32 or BF16, rounded to nearest even).
func writeValues(w io.Writer, x []float32, st safetensors.DType) error {
	const chunk = 1 << 16
	var buf []byte
	for start := 0; start < len(x); start += chunk {
		part := x[start:min(start+chunk, len(x))]
		buf = buf[:0]
		for _, v := range part {
			if st == safetensors.BF16 {
				buf = binary.LittleEndian.AppendUint16(buf, safetensors.BF16FromFloat32(v))
			} else {
				buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
			}
		}
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	return nil
}
