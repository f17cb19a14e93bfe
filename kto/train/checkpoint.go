package train

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/gomlx/gomlx/pkg/ml/context/checkpoints"
)

// checkpointConfigFile, in the checkpoint directory, records what the checkpoints train.
const checkpointConfigFile = "ktoloader_train.json"

type checkpointConfig struct {
	Model     ModelConfig `json:"model"`
	Seed      uint64      `json:"seed"`
	MaxLen    int         `json:"max_len"`
	BatchSize int         `json:"batch_size"`
}

// openCheckpoints attaches the GomlX checkpoint handler, which loads the latest checkpoint
// (if any) into variables as the model creates them.
func (s *runState) openCheckpoints() error {
	dir := s.opts.CheckpointDir
	want := checkpointConfig{Model: s.model, Seed: s.opts.Seed, MaxLen: s.shape.MaxLen, BatchSize: s.shape.BatchSize}
	cfgPath := filepath.Join(dir, checkpointConfigFile)
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
		hj, _ := json.Marshal(have)
		wj, _ := json.Marshal(want)
		if string(hj) != string(wj) {
			return fmt.Errorf("%w: %s was written for another model, seed or data shape:\n have %s\n want %s", ErrCheckpoint, dir, hj, wj)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	err := writeAtomic(cfgPath, func(w io.Writer) error {
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
