package export

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/ktoloader/ktoloader/kto"
	"github.com/ktoloader/ktoloader/loader"
	"github.com/ktoloader/ktoloader/tokenize"
)

// TestVerifyKTOPipeline writes what package kto's batcher and packers make of random
// examples and verifies it: the packer and the verifier were written separately from
// DESIGN.md, so agreement here checks both. Lengths are drawn so that some KL sequences
// must be cut to fit (prompt_i + completion_{i−1} > MaxLen).
func TestVerifyKTOPipeline(t *testing.T) {
	for _, dropLast := range []bool{false, true} {
		t.Run(fmt.Sprintf("dropLast=%v", dropLast), func(t *testing.T) {
			cfg := kto.Config{BatchSize: 4, MaxLen: 48, Seed: 7, DropLast: dropLast}
			rng := rand.New(rand.NewPCG(1, 2))
			var exs []tokenize.Example
			for i := 0; i < 39; i++ {
				p := 2 + rng.IntN(30)
				c := 1 + rng.IntN(cfg.MaxLen-p)
				ex := tokenize.Example{Label: rng.IntN(3) > 0, Behavior: []string{"a", "b", "c"}[i%3], Source: loader.Source{File: "in.jsonl", Line: int64(i + 1)}}
				ex.PromptIDs = append(ex.PromptIDs, 1)
				for k := 1; k < p; k++ {
					ex.PromptIDs = append(ex.PromptIDs, int32(3+rng.IntN(1000)))
				}
				for k := 0; k < c; k++ {
					ex.CompletionIDs = append(ex.CompletionIDs, int32(3+rng.IntN(1000)))
				}
				ex.CompletionIDs[c-1] = 2
				exs = append(exs, ex)
			}
			rows, bst, err := kto.Batches(exs, cfg)
			if err != nil {
				t.Fatal(err)
			}
			packed, pst, err := kto.PackKTO(rows, cfg)
			if err != nil {
				t.Fatal(err)
			}
			// sft/ holds the desirable examples that made it into kto/ (all but --drop-last's).
			batched := make([]tokenize.Example, len(rows))
			for i, r := range rows {
				batched[i] = tokenize.Example{PromptIDs: r.PromptIDs, CompletionIDs: r.CompletionIDs, Label: r.Label}
			}
			sft, sst, err := kto.PackSFT(batched, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if bst.KLTruncated == 0 {
				t.Log("no KL sequence was cut; the lengths no longer exercise that case")
			}

			dir := t.TempDir()
			m := NewManifest()
			m.Config = RunConfig{MaxLen: cfg.MaxLen, KTOBatchSize: cfg.BatchSize, SFTLoss: "completion", DropLast: dropLast}
			m.Packing.MaxLen = cfg.MaxLen
			m.KTO.BatchSize = cfg.BatchSize
			sc := SplitCounts{Behaviors: map[string]LabelCounts{}}
			for _, ex := range rows {
				sc.Examples++
				lc := sc.Behaviors[ex.Behavior]
				if ex.Label {
					sc.Desirable++
					lc.Desirable++
				} else {
					sc.Undesirable++
					lc.Undesirable++
				}
				sc.Behaviors[ex.Behavior] = lc
			}
			// As internal/pipeline does: --drop-last's examples are rejected, not written.
			m.Counts.Read, m.Counts.Written = int64(len(exs)), int64(len(exs))-bst.Dropped
			if bst.Dropped > 0 {
				m.Counts.Rejected = bst.Dropped
				m.Counts.Reasons["drop_last"] = bst.Dropped
			}
			m.Counts.Splits["train"] = sc
			m.KTO.Splits["train"] = bst.BatchCounts
			m.Packing.KTOPacked["train"] = pst.PackCounts
			m.Packing.SFT["train"] = sst.PackCounts
			opt := WriterOptions{ShardRows: 5}
			m.Files = append(m.Files, writeShards(t, dir, KindKTO, "train", opt, rows)...)
			m.Files = append(m.Files, writeShards(t, dir, KindKTOPacked, "train", opt, packed)...)
			m.Files = append(m.Files, writeShards(t, dir, KindSFT, "train", opt, sft)...)
			var rej []byte
			for range bst.Dropped {
				rej = append(rej, `{"file":"x","line":1,"field":"","reason":"drop_last","raw":""}`+"\n"...)
			}
			if err := WriteFileAtomic(filepath.Join(dir, "rejects.jsonl"), rej); err != nil {
				t.Fatal(err)
			}
			if err := WriteManifest(dir, m); err != nil {
				t.Fatal(err)
			}
			verifyOK(t, dir)
		})
	}
}
