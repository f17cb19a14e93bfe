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
	b, err := canonicalJSON(manifestConfig(cfg))
	return err == nil && bytes.Equal(a, b)
}

// manifestConfig is the manifest's config for cfg.
func manifestConfig(cfg Config) map[string]any {
	c := make(map[string]any, len(cfg.ConfigEcho)+2)
	for k, v := range cfg.ConfigEcho {
		c[k] = v
	}
	if cfg.NumShards > 1 { // merge reads these to check that its inputs make one whole
		c["shard_index"], c["num_shards"] = cfg.ShardIndex, cfg.NumShards
	}
	return c
}

// canonicalJSON is v as a manifest read back (json.Number values) writes it again.
func canonicalJSON(v map[string]any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var back map[string]any
	if err := dec.Decode(&back); err != nil {
		return nil, err
	}
	return json.Marshal(back)
}
