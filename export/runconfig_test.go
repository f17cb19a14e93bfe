package export

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// prepEcho is the map[string]any that prep wrote as the manifest's config before RunConfig,
// with the Go types of its flags (cmd/ktoloader/prep.go at cdbcd41), and pipeline.Run's
// shard keys added for a sharded run. partition is false for the map of the versions before
// --partition-size (8210604).
func prepEcho(c RunConfig, partition bool) map[string]any {
	m := map[string]any{
		"format": c.Format, "shard_rows": c.ShardRows, "shard_bytes": c.ShardBytes, "seed": c.Seed,
		"test_frac": c.TestFrac, "kto_batch_size": c.KTOBatchSize, "max_len": c.MaxLen, "truncate": c.Truncate,
		"sft_loss": c.SFTLoss, "drop_last": c.DropLast, "tools": c.Tools, "assistant_text_with_tools": c.AssistantTextWithTools,
		"max_line_bytes": c.MaxLineBytes, "missing_label": c.MissingLabel, "strict": c.Strict,
		"max_reject_frac": c.MaxRejectFrac,
	}
	if partition {
		m["partition_size"] = c.PartitionSize
	}
	if c.NumShards > 1 {
		m["shard_index"], m["num_shards"] = *c.ShardIndex, c.NumShards
	}
	return m
}

// encodeLikeManifest encodes v as Manifest.Marshal encodes the config inside it.
func encodeLikeManifest(t *testing.T, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("  ", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func runConfigCases() map[string]RunConfig {
	one := 1
	zero := 0
	defaults := RunConfig{ // prep's defaults, --test-frac 0.05 (the Nexus run)
		AssistantTextWithTools: "keep", Format: "parquet", KTOBatchSize: 8, MaxLen: 2048, MaxLineBytes: 64 << 20,
		PartitionSize: 1 << 20, Seed: 42, SFTLoss: "completion", ShardBytes: 256 << 20, TestFrac: 0.05, Truncate: "reject",
	}
	odd := RunConfig{
		AssistantTextWithTools: "drop", DropLast: true, Format: "both", KTOBatchSize: 3, MaxLen: 17, MaxLineBytes: 1,
		MaxRejectFrac: 0.125, MissingLabel: "false", PartitionSize: 5, Seed: -1 << 62, SFTLoss: "all-assistant",
		ShardBytes: 0, ShardRows: 1 << 40, Strict: true, TestFrac: 1e-7, Tools: `dir/<tools> & "x".json`, Truncate: "keep-end",
	}
	sharded := defaults
	sharded.NumShards, sharded.ShardIndex = 4, &one
	shard0 := odd
	shard0.NumShards, shard0.ShardIndex = 2, &zero
	return map[string]RunConfig{"defaults": defaults, "odd": odd, "sharded": sharded, "shard0": shard0}
}

// The manifest's bytes must not change with the move from the map to RunConfig: the same
// flags encode to the same bytes, and a manifest that the map wrote reads back to a
// RunConfig that writes it again unchanged.
func TestRunConfigBytesMatchMap(t *testing.T) {
	for name, c := range runConfigCases() {
		for _, partition := range []bool{true, false} {
			if !partition {
				c.PartitionSize = 0 // as read from a manifest without the key
			}
			want := encodeLikeManifest(t, prepEcho(c, partition))
			if got := encodeLikeManifest(t, c); !bytes.Equal(got, want) {
				t.Errorf("%s (partition_size %v): RunConfig writes\n%s\nthe map wrote\n%s", name, partition, got, want)
			}
			var back RunConfig
			dec := json.NewDecoder(bytes.NewReader(want))
			dec.UseNumber() // as ReadManifest decodes
			if err := dec.Decode(&back); err != nil {
				t.Fatalf("%s: reading the map's config: %v", name, err)
			}
			if got := encodeLikeManifest(t, back); !bytes.Equal(got, want) {
				t.Errorf("%s (partition_size %v): read back and written again\n%s\nwant\n%s", name, partition, got, want)
			}
		}
	}
}

// Declaration order is the written order (see RunConfig): a field added out of key order
// would put the manifest's keys out of the sorted order that the map gave them.
func TestRunConfigFieldsInKeyOrder(t *testing.T) {
	var keys []string
	rt := reflect.TypeOf(RunConfig{})
	for i := range rt.NumField() {
		tag := rt.Field(i).Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name == "" || name == "-" {
			t.Errorf("field %s has no JSON name", rt.Field(i).Name)
		}
		keys = append(keys, name)
	}
	if !slices.IsSorted(keys) {
		t.Errorf("RunConfig's JSON keys are not declared in sorted order: %v", keys)
	}
}

// The readers take the flags' meaning from RunConfig: check the conversions against the
// fields they name.
func TestRunConfigConversions(t *testing.T) {
	c := runConfigCases()["odd"]
	k := c.KTO()
	if k.BatchSize != 3 || k.MaxLen != 17 || k.TestFrac != 1e-7 || k.Seed != -1<<62 || k.Truncate != "keep-end" ||
		k.SFTLoss != "all-assistant" || !k.DropLast {
		t.Errorf("KTO() = %+v from %+v", k, c)
	}
	w, err := c.Writer()
	if err != nil || w.Format != FormatBoth || w.ShardRows != 1<<40 || w.ShardBytes != 0 {
		t.Errorf("Writer() = %+v, %v", w, err)
	}
	if w, err := (RunConfig{}).Writer(); err != nil || w.Format != (WriterOptions{}).Format || w.ShardRows != 0 || w.ShardBytes != 0 || w.BeforeRename != nil {
		t.Errorf("zero RunConfig: Writer() = %+v, %v", w, err)
	}
	if _, err := (RunConfig{Format: "csv"}).Writer(); err == nil {
		t.Error("format csv accepted")
	}
	s := runConfigCases()["sharded"]
	if got := s.WithoutShardIndex(); got.ShardIndex != nil || got.NumShards != 4 || s.ShardIndex == nil {
		t.Errorf("WithoutShardIndex: %+v (from %+v)", got, s)
	}
	m, err := s.Map()
	if err != nil {
		t.Fatal(err)
	}
	if m["shard_index"] != json.Number("1") || m["test_frac"] != json.Number("0.05") || m["truncate"] != "reject" || len(m) != 19 {
		t.Errorf("Map() = %v", m)
	}
}
