package pipeline

import (
	"bytes"
	"encoding/json"

	"github.com/ktoloader/ktoloader/export"
)

// SameRun reports whether prev, the manifest of the finished run an output directory holds,
// was made by the run cfg describes, so that making it again loses nothing (the outputs are
// deterministic): the same inputs by name, in order; the same recorded flags (the manifest's
// config: ConfigEcho, and the shard of a sharded run); and, when cfg.Tokenizer is set, the
// same tokenizer (its sha256). Such a re-run replaces the previous one without Force.
//
// The inputs' contents are not compared, since that would read every input before the run:
// a re-run after an input was edited replaces the run made from its old content, which is
// what running the same command again asks for.
func SameRun(prev *export.Manifest, cfg Config) bool {
	if prev == nil {
		return false
	}
	if len(prev.Inputs) != len(cfg.Inputs) {
		return false
	}
	for i, in := range cfg.Inputs {
		if prev.Inputs[i].Name != in.Name {
			return false
		}
	}
	if cfg.Tokenizer != nil && (prev.Tokenizer.SHA256 != cfg.Tokenizer.SHA256() || prev.Tokenizer.Demo != cfg.TokDemo) {
		return false
	}
	a, err := json.Marshal(prev.Config)
	if err != nil {
		return false
	}
	b, err := json.Marshal(manifestConfig(cfg))
	return err == nil && bytes.Equal(a, b)
}

// manifestConfig is the manifest's config for cfg: the flags as given, and the shard of a
// sharded run, which merge reads to check that its inputs make one whole.
func manifestConfig(cfg Config) export.RunConfig {
	c := cfg.ConfigEcho
	if cfg.NumShards > 1 {
		idx := cfg.ShardIndex
		c.ShardIndex, c.NumShards = &idx, cfg.NumShards
	}
	return c
}
