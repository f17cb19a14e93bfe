package export

import (
	"bytes"
	"encoding/json"

	"github.com/ktoloader/ktoloader/kto"
)

// RunConfig is the manifest's "config": the prep flags that shape the output, all but
// --workers, keyed by flag name with '-' as '_'. prep writes it, merge copies it (without
// shard_index), and verify, report, merge and the trainer read it back, so a flag's name
// and type live here once rather than as string keys at each reader.
//
// It lives in export, not kto, because it records more than the KTO knobs (shard format and
// sizes, the reader's limits, the rejects policy); KTO and Writer convert to those packages'
// options.
//
// The fields are declared in the sorted order of their JSON keys: the manifest was first
// written from a map[string]any, which encoding/json writes with sorted keys, and a struct
// is written in declaration order, so this order keeps the bytes of every manifest the same
// (TestRunConfigBytesMatchMap checks it). Fields that the map left out when unset carry
// omitempty; the others were always written, zero or not. Keep new fields in key order.
type RunConfig struct {
	AssistantTextWithTools string  `json:"assistant_text_with_tools"`
	DropLast               bool    `json:"drop_last"`
	Format                 string  `json:"format"` // parquet, arrow or both, as given
	KTOBatchSize           int     `json:"kto_batch_size"`
	MaxLen                 int     `json:"max_len"`
	MaxLineBytes           int     `json:"max_line_bytes"`
	MaxRejectFrac          float64 `json:"max_reject_frac"`
	MissingLabel           string  `json:"missing_label"` // "", "true" or "false", as given
	// NumShards and ShardIndex are written only by a sharded run (--num-shards > 1); merge
	// reads them to check that its inputs make one whole, and drops ShardIndex.
	NumShards int `json:"num_shards,omitempty"`
	// PartitionSize is absent from manifests written before --partition-size existed.
	PartitionSize int     `json:"partition_size,omitempty"`
	Seed          int64   `json:"seed"`
	SFTLoss       string  `json:"sft_loss"`
	ShardBytes    int64   `json:"shard_bytes"`
	ShardIndex    *int    `json:"shard_index,omitempty"`
	ShardRows     int64   `json:"shard_rows"`
	Strict        bool    `json:"strict"`
	TestFrac      float64 `json:"test_frac"`
	Tools         string  `json:"tools"` // the --tools file as given
	Truncate      string  `json:"truncate"`
}

// KTO returns the kto.Config these flags ask for (defaults not applied).
func (c RunConfig) KTO() kto.Config {
	return kto.Config{BatchSize: c.KTOBatchSize, MaxLen: c.MaxLen, TestFrac: c.TestFrac, Seed: c.Seed,
		Truncate: c.Truncate, SFTLoss: c.SFTLoss, DropLast: c.DropLast}
}

// Writer returns the shard writer options these flags ask for. An empty Format (a manifest
// without one) gives the zero Format.
func (c RunConfig) Writer() (WriterOptions, error) {
	w := WriterOptions{ShardRows: c.ShardRows, ShardBytes: c.ShardBytes}
	if c.Format != "" {
		f, err := ParseFormat(c.Format)
		if err != nil {
			return w, err
		}
		w.Format = f
	}
	return w, nil
}

// WithoutShardIndex is c less shard_index: what the shards of one run share.
func (c RunConfig) WithoutShardIndex() RunConfig {
	c.ShardIndex = nil
	return c
}

// Map returns c as the JSON object it is written as, numbers as json.Number, for printing
// key by key.
func (c RunConfig) Map() (map[string]any, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, err // a NaN or infinite fraction
	}
	out := map[string]any{}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	return out, dec.Decode(&out)
}
