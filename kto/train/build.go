package train

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/ktoloader/ktoloader/internal/safetensors"
)

// checkModelFits refuses a model the data or the machine cannot run, before any weight is
// allocated: ids past the vocabulary, rows longer than the model attends over, and (on the
// CPU backend, whose tensors are this process's memory) weights that cannot fit the RAM.
func (s *runState) checkModelFits(maxTokenID int) error {
	if maxTokenID >= s.model.VocabSize {
		return fmt.Errorf("%w: token id %d in the data, vocab_size %d", ErrBadModelConfig, maxTokenID, s.model.VocabSize)
	}
	if err := s.model.checkRows(s.shape.MaxLen); err != nil {
		return err
	}
	return nil
}

// checkHostMemory compares the bytes the weights and optimizer state need with the machine's
// memory, for backends that keep tensors on the host.
func (s *runState) checkHostMemory() error {
	if !isCPU(s.backend) {
		return nil
	}
	need := s.model.TrainingBytes(s.net.LoRA, s.opts.computeDType())
	have := physicalMemory()
	if have > 0 && need > float64(have) {
		return fmt.Errorf("%w: the model needs about %.1f GiB for weights and optimizer state, the machine has %.1f GiB",
			ErrBadModelConfig, need/(1<<30), float64(have)/(1<<30))
	}
	return nil
}

// TrainingBytes estimates the host bytes of weights, gradients and Adam state: a full
// fine-tune keeps float32 weights, gradients and two moments (16 bytes a parameter), a LoRA
// run the frozen base in dtype and 16 bytes per adapter parameter. Computed in float64: a
// hostile config overflows no integer.
func (c ModelConfig) TrainingBytes(l LoRAConfig, dtype dtypes.DType) float64 {
	base := c.numParametersF()
	if !l.Enabled() {
		return 16 * base
	}
	return base*float64(dtype.Size()) + 16*float64(l.NumParameters(c))
}

// physicalMemory is MemTotal from /proc/meminfo in bytes (0 when unknown).
func physicalMemory() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return 0
}

// buildModel creates the policy's variables in s.ctx: pretrained weights when the model
// directory has them, else random ones from the seed; in a LoRA run the base is frozen in
// --dtype and the adapter (loaded from --adapter, or PEFT's initialisation) is what trains.
// A full fine-tune trains float32 weights (bf16 weights drift under Adam) and only its
// matrix products run in --dtype.
func (s *runState) buildModel() error {
	o := &s.opts
	dt := o.computeDType()
	lora := o.LoRA
	if o.Adapter != "" {
		cfg, err := ReadAdapterConfig(o.Adapter)
		if err != nil {
			return err
		}
		lora = cfg
	}
	s.net = Net{Config: s.model, DType: dt, LoRA: lora, HeadChunk: o.HeadChunk}
	s.refNet = Net{Config: s.model, DType: dt, LoRA: lora, AdapterOff: true, HeadChunk: o.HeadChunk}
	if err := s.checkHostMemory(); err != nil {
		return err
	}
	baseDType := dtypes.Float32
	if lora.Enabled() {
		baseDType = dt
	}
	if err := s.loadBase(s.ctx, baseDType); err != nil {
		return err
	}
	if !lora.Enabled() {
		return nil
	}
	for v := range s.ctx.IterVariables() {
		if v.Name() == weightName {
			v.SetTrainable(false)
			s.baseVars = append(s.baseVars, v)
		}
	}
	if s.ckpt != nil {
		s.ckpt.ExcludeVarsFromSaving(s.baseVars...)
	}
	if o.Adapter != "" {
		if err := LoadAdapter(s.ctx, s.backend, o.Adapter, s.model, lora); err != nil {
			return err
		}
	}
	s.model.InitLoRA(s.ctx, lora, o.Seed)
	return nil
}

// loadBase fills ctx with the base weights in dtype.
func (s *runState) loadBase(ctx *context.Context, dtype dtypes.DType) error {
	if s.src.Weights {
		s.status(fmt.Sprintf("loading weights from %s", s.src.Dir))
		return s.model.LoadWeights(ctx, s.backend, s.src.Dir, dtype)
	}
	s.model.initVariables(ctx, s.opts.Seed, dtype)
	return nil
}

// buildReference makes the reference model's context. A LoRA run's reference is its own
// base with the adapter off (TRL with a PEFT model): the context holds the policy's frozen
// tensors themselves, never a copy. A full fine-tune's reference is the initial model again,
// in float32 like the policy, so the two are bit-identical at step 0.
func (s *runState) buildReference() error {
	s.refCtx = context.New()
	if s.net.LoRA.Enabled() {
		s.sharedRef = true
		rc := s.refCtx.Checked(false)
		for _, v := range s.baseVars {
			rc.InAbsPath(v.Scope()).VariableWithValue(v.Name(), v.MustValue()).SetTrainable(false)
		}
		return nil
	}
	if err := s.loadBase(s.refCtx, dtypes.Float32); err != nil {
		return err
	}
	for v := range s.refCtx.IterVariables() {
		v.SetTrainable(false)
	}
	return nil
}

// saveOutputs writes --save-adapter and --save-merged.
func (s *runState) saveOutputs(sum *Summary) error {
	o := &s.opts
	base := s.src.Repo
	if base == "" {
		base = s.src.Dir
	}
	if o.SaveAdapter != "" {
		if err := SaveAdapter(o.SaveAdapter, s.ctx, s.model, s.net.LoRA, base); err != nil {
			return fmt.Errorf("--save-adapter: %w", err)
		}
		sum.SavedAdapter = o.SaveAdapter
		s.status("adapter saved in " + o.SaveAdapter)
	}
	if o.SaveMerged != "" {
		cfg, err := s.configJSON()
		if err != nil {
			return err
		}
		dt := dtypes.Float32
		if s.net.LoRA.Enabled() {
			dt = s.net.computeDType()
		}
		if s.src.Weights {
			dt, err = s.sourceDType()
			if err != nil {
				return err
			}
		}
		if err := SaveMerged(o.SaveMerged, s.ctx, s.model, s.net.LoRA, dt, cfg); err != nil {
			return fmt.Errorf("--save-merged: %w", err)
		}
		sum.SavedMerged = o.SaveMerged
		s.status("merged model saved in " + o.SaveMerged)
	}
	return nil
}

// configJSON is the model's config.json: the source's own when there is one (every field
// kept, torch_dtype included), else the config with the architecture named.
func (s *runState) configJSON() ([]byte, error) {
	if s.src.Dir != "" {
		return os.ReadFile(filepath.Join(s.src.Dir, "config.json"))
	}
	m := map[string]any{}
	data, _ := json.Marshal(s.model)
	_ = json.Unmarshal(data, &m)
	m["architectures"] = []string{"MistralForCausalLM"}
	m["model_type"] = "mistral"
	m["hidden_act"] = "silu"
	m["torch_dtype"] = "float32"
	return json.MarshalIndent(m, "", "  ")
}

// sourceDType is the dtype of the pretrained weights (the embedding's), the dtype a merged
// model is saved in, as transformers keeps a model's torch_dtype.
func (s *runState) sourceDType() (dtypes.DType, error) {
	d, err := safetensors.OpenDir(s.src.Dir)
	if err != nil {
		return dtypes.Float32, err
	}
	defer d.Close()
	if info, _, ok := d.Info("model.embed_tokens.weight"); ok && info.DType == safetensors.BF16 {
		return dtypes.BFloat16, nil
	}
	return dtypes.Float32, nil
}
