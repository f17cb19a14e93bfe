package train

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/internal/safetensors"
)

// WriteRandomModel writes a Hugging Face model directory for cfg with random weights:
// config.json (configJSON with torch_dtype set to dtype) and model.safetensors, or shards of
// at most maxShardBytes with model.safetensors.index.json (≤ 0: transformers' 5 GB). The
// values are InitVariables' for seed (N(0, initializer_range²) matrices, norm scales 1),
// rounded to dtype as a bf16 base is, so `--model DIR` starts from the weights a config.json
// alone with --seed would give. Each tensor is drawn while it is written, 64 Ki values at a
// time: a 7B model is never in memory. Same config, dtype and seed: the same bytes.
func WriteRandomModel(dir string, cfg ModelConfig, configJSON []byte, dtype string, seed uint64, maxShardBytes int64) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	st, torchDType := safetensors.F32, "float32"
	switch dtype {
	case "", DTypeFloat32:
	case DTypeBFloat16:
		st, torchDType = safetensors.BF16, "bfloat16"
	default:
		return fmt.Errorf("%w: --dtype %q (want %q or %q)", ErrBadOption, dtype, DTypeFloat32, DTypeBFloat16)
	}
	if maxShardBytes <= 0 {
		maxShardBytes = mergedShardBytes
	}
	var doc map[string]any
	if err := json.Unmarshal(configJSON, &doc); err != nil {
		return fmt.Errorf("%w: config.json: %v", ErrBadModelConfig, err)
	}
	doc["torch_dtype"] = torchDType
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var ts []safetensors.Tensor
	for _, spec := range cfg.variables() {
		spec := spec
		n := 1
		for _, d := range spec.dims {
			n *= d
		}
		ts = append(ts, safetensors.Tensor{Name: hfName(spec.scope), DType: st, Shape: spec.dims,
			Write: func(w io.Writer) error {
				const chunk = 1 << 16
				buf := make([]float32, min(chunk, n))
				rng := scopeRNG(seed, spec.scope)
				for start := 0; start < n; start += chunk {
					part := buf[:min(chunk, n-start)]
					for i := range part {
						if spec.ones {
							part[i] = 1
						} else {
							part[i] = float32(rng.NormFloat64() * cfg.InitializerRange)
						}
					}
					if err := writeValues(w, part, st); err != nil {
						return err
					}
				}
				return nil
			}})
	}
	if _, err := safetensors.WriteDir(dir, ts, maxShardBytes, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	return export.WriteAtomic(filepath.Join(dir, "config.json"), func(w io.Writer) error {
		_, err := w.Write(append(out, '\n'))
		return err
	})
}
