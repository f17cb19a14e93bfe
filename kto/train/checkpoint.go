package train

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gomlx/gomlx/pkg/ml/context/checkpoints"
	"github.com/ktoloader/ktoloader/export"
)

// checkpointConfigFile, in the checkpoint directory, records what the checkpoints train.
const checkpointConfigFile = "ktoloader_train.json"

// checkpointConfig is what a checkpoint must have been made with for --resume to continue
// it: the same model and weights, data (the manifest's sha256: shards, tokenizer, seed and
// max_len are all in it), batch and accumulation (which fix which batches a step number
// has consumed), dtype, adapter and loss. Learning rate, schedule, steps and evaluation may
// change on resume.
type checkpointConfig struct {
	Model          ModelConfig `json:"model"`
	Seed           uint64      `json:"seed"`
	MaxLen         int         `json:"max_len"`
	BatchSize      int         `json:"batch_size"`
	ManifestSHA256 string      `json:"manifest_sha256,omitempty"`
	GradAccum      int         `json:"grad_accum,omitempty"`
	Weights        string      `json:"weights,omitempty"`
	DType          string      `json:"dtype,omitempty"`
	LoRA           *LoRAConfig `json:"lora,omitempty"`
	Adapter        string      `json:"adapter,omitempty"`
	Loss           LossConfig  `json:"loss"`
}

// ResumeChecked lists, for --help, what --resume compares.
const ResumeChecked = "model config and weights, data (manifest sha256), seed, max_len, KTO batch size, --grad-accum, --dtype, LoRA settings, --adapter, loss type/β/weights"

// diffFields names the top-level JSON fields where a and b differ.
func diffFields(a, b checkpointConfig) []string {
	var ma, mb map[string]json.RawMessage
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	_ = json.Unmarshal(ja, &ma)
	_ = json.Unmarshal(jb, &mb)
	var out []string
	for k, v := range mb {
		if string(ma[k]) != string(v) {
			out = append(out, fmt.Sprintf("%s: checkpoint %s, this run %s", k, orNone(ma[k]), v))
		}
	}
	for k, v := range ma {
		if _, ok := mb[k]; !ok {
			out = append(out, fmt.Sprintf("%s: checkpoint %s, this run none", k, v))
		}
	}
	slices.Sort(out)
	return out
}

func orNone(m json.RawMessage) string {
	if m == nil {
		return "none"
	}
	return string(m)
}

// quarantineBroken renames checkpoints that a kill left unreadable (an empty or truncated
// .json, a missing .bin) to broken-…, so that GomlX loads the newest complete one, and
// returns the names moved.
func quarantineBroken(dir string) ([]string, error) {
	jsons, _ := filepath.Glob(filepath.Join(dir, "checkpoint-*.json"))
	var moved []string
	for _, j := range jsons {
		stem := strings.TrimSuffix(j, ".json")
		data, err := os.ReadFile(j)
		_, binErr := os.Stat(stem + ".bin")
		if err == nil && json.Valid(data) && len(data) > 0 && binErr == nil {
			continue
		}
		for _, p := range []string{j, stem + ".bin"} {
			if _, err := os.Stat(p); err != nil {
				continue
			}
			if err := os.Rename(p, filepath.Join(dir, "broken-"+filepath.Base(p))); err != nil {
				return moved, fmt.Errorf("%w: %v", ErrCheckpoint, err)
			}
		}
		moved = append(moved, filepath.Base(j))
	}
	return moved, nil
}

// openCheckpoints attaches the GomlX checkpoint handler, which loads the latest checkpoint
// (if any) into variables as the model creates them.
func (s *runState) openCheckpoints() error {
	dir := s.opts.CheckpointDir
	o := &s.opts
	want := checkpointConfig{Model: s.model, Seed: o.Seed, MaxLen: s.shape.MaxLen, BatchSize: s.shape.BatchSize,
		ManifestSHA256: s.manifest.SHA256, GradAccum: o.GradAccum, Weights: s.src.Fingerprint, DType: o.DType,
		Adapter: o.Adapter, Loss: s.loss}
	if o.LoRA.Enabled() {
		want.LoRA = &o.LoRA
	}
	cfgPath := filepath.Join(dir, checkpointConfigFile)
	if o.Resume {
		moved, err := quarantineBroken(dir)
		if err != nil {
			return err
		}
		for _, m := range moved {
			s.status(fmt.Sprintf("checkpoint %s is incomplete (a kill while saving?): moved aside as broken-%s, resuming from the newest complete one", m, m))
		}
	}
	existing, _ := filepath.Glob(filepath.Join(dir, "checkpoint-*.json"))
	if len(existing) > 0 {
		if !s.opts.Resume {
			return fmt.Errorf("%w: %s: pass --resume to continue, or choose another directory", ErrCheckpointExists, dir)
		}
		data, err := os.ReadFile(cfgPath)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrCheckpoint, err)
		}
		var have checkpointConfig
		if err := json.Unmarshal(data, &have); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrCheckpoint, cfgPath, err)
		}
		if diff := diffFields(have, want); len(diff) > 0 {
			return fmt.Errorf("%w: %s was made by another run; --resume continues only the same one:\n  %s",
				ErrCheckpointMismatch, dir, strings.Join(diff, "\n  "))
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	err := export.WriteAtomic(cfgPath, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(want)
	})
	if err != nil {
		return err
	}
	s.ckpt, err = checkpoints.Build(s.ctx).Dir(dir).Keep(s.opts.KeepCheckpoints).ExcludeAllParams().Done()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCheckpoint, err)
	}
	if len(existing) > 0 {
		s.status(fmt.Sprintf("resuming from %s", dir))
	} else if s.opts.Resume {
		s.status(fmt.Sprintf("no checkpoint in %s yet: starting from scratch", dir))
	}
	return nil
}
