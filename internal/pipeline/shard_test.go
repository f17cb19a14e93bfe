package pipeline

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/internal/stablehash"
	"github.com/ktoloader/ktoloader/kto"
	"github.com/ktoloader/ktoloader/loader"
	"github.com/ktoloader/ktoloader/testdata"
	"github.com/ktoloader/ktoloader/tokenize"
)

// ktoRows reads every kto/ row of a finished run, by split.
func ktoRows(t *testing.T, out string, m *export.Manifest) map[string][]kto.KTORow {
	t.Helper()
	rows := map[string][]kto.KTORow{}
	for _, f := range m.Files {
		if f.Kind != export.KindKTO || f.Format != export.FormatParquet {
			continue
		}
		rs, err := export.ReadAll[kto.KTORow](filepath.Join(out, f.Path))
		if err != nil {
			t.Fatal(err)
		}
		rows[f.Split] = append(rows[f.Split], rs...)
	}
	return rows
}

// rowKey is what must survive sharding unchanged: the ids and the label.
func rowKey(r kto.KTORow) string {
	return fmt.Sprint(r.PromptIDs, r.CompletionIDs, r.Label)
}

// countRows counts the kto/ rows of a finished run into got (by rowKey), and fails when a
// prompt is on both sides of the split, side holding each prompt's split across calls.
func countRows(t *testing.T, out string, m *export.Manifest, got map[string]int, side map[string]string) {
	t.Helper()
	for split, rs := range ktoRows(t, out, m) {
		for _, r := range rs {
			got[rowKey(r)]++
			if s, ok := side[r.Prompt]; ok && s != split {
				t.Errorf("prompt in %s and %s: %.80q", s, split, r.Prompt)
			}
			side[r.Prompt] = split
		}
	}
}

// TestShardsHoldTheWholeRun: the two halves of --num-shards 2 hold exactly the kto/ rows of
// one unsharded run (as a multiset of prompt ids, completion ids and label), their counts sum
// to its counts, each skips exactly the rows the other read, both verify, and no prompt is
// in train in one shard and in test in the other.
func TestShardsHoldTheWholeRun(t *testing.T) {
	tok := demoTok(t)
	kc := kto.Config{TestFrac: 0.2, Seed: 5, MaxLen: 1024}
	dir := t.TempDir()
	whole := run(t, Config{Inputs: sampleInputs(), Tokenizer: tok, Out: filepath.Join(dir, "all"), KTO: kc, Workers: 2})
	want := map[string]int{}
	countRows(t, filepath.Join(dir, "all"), whole, want, map[string]string{})

	got := map[string]int{}
	side := map[string]string{} // prompt text → split, across both shards
	var read, written, rejected, skipped [2]int64
	for i := 0; i < 2; i++ {
		out := filepath.Join(dir, fmt.Sprint("shard", i))
		m := run(t, Config{Inputs: sampleInputs(), Tokenizer: tok, Out: out, KTO: kc, Workers: 3, NumShards: 2, ShardIndex: i})
		if rep, err := export.Verify(out); err != nil || !rep.OK() {
			t.Fatalf("shard %d: verify: %v %+v", i, err, rep)
		}
		if c := m.Config; c.NumShards != 2 || c.ShardIndex == nil || *c.ShardIndex != i {
			t.Errorf("shard %d: config records shard %v of %v", i, c.ShardIndex, c.NumShards)
		}
		c := m.Counts
		read[i], written[i], rejected[i], skipped[i] = c.Read, c.Written, c.Rejected, c.Notes[NoteSkippedOtherShard]
		if c.Read == 0 || c.Written == 0 {
			t.Fatalf("shard %d is empty: %+v", i, c)
		}
		countRows(t, out, m, got, side)
	}
	wc := whole.Counts
	if read[0]+read[1] != wc.Read || written[0]+written[1] != wc.Written || rejected[0]+rejected[1] != wc.Rejected {
		t.Errorf("shards read %v written %v rejected %v; the whole run %d %d %d", read, written, rejected, wc.Read, wc.Written, wc.Rejected)
	}
	if skipped[0] != read[1] || skipped[1] != read[0] {
		t.Errorf("shards skipped %v, read %v: each should skip what the other read", skipped, read)
	}
	if len(got) != len(want) {
		t.Errorf("shards hold %d distinct rows, the whole run %d", len(got), len(want))
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("row %.100s: %d times in the shards, %d in the whole run", k, got[k], n)
		}
	}
}

// TestGroupOfMatchesEncode: the shard of a row is computed from its rendering without
// tokenizing; it must be the group the split will use on the tokenized example.
func TestGroupOfMatchesEncode(t *testing.T) {
	mistral, err := tokenize.NewMistral(demoTok(t), tokenize.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := loader.NewReader(bytes.NewReader(testdata.SampleJSONL), "sample", loader.Config{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		row, err := r.Read()
		if err != nil {
			if _, bad := err.(*loader.RowError); bad {
				continue
			}
			break
		}
		rd, err := mistral.Render(&row)
		if err != nil {
			continue
		}
		ex := mistral.Encode(&row, rd)
		if g, want := groupOf(rd), kto.GroupKey(&ex); g != want {
			t.Fatalf("line %d: groupOf %x, kto.GroupKey %x", row.Line, g, want)
		}
		n++
	}
	if n < 100 {
		t.Fatalf("only %d rows checked", n)
	}
}

// TestShardOfSpreads: shards of distinct hashes come out about even.
func TestShardOfSpreads(t *testing.T) {
	const n, N = 60000, 6
	var count [N]int
	for i := 0; i < n; i++ {
		count[shardOf(stablehash.FNVBytes(stablehash.FNVOffset, fmt.Appendf(nil, "row %d", i)), N)]++
	}
	for s, c := range count {
		if c < n/N*9/10 || c > n/N*11/10 {
			t.Errorf("shard %d got %d of %d", s, c, n)
		}
	}
}

// TestBadShard: an index outside [0, N) is refused before anything is written.
func TestBadShard(t *testing.T) {
	for _, c := range [][2]int{{2, 2}, {-1, 2}, {1, 0}, {0, -3}} {
		out := filepath.Join(t.TempDir(), "out")
		_, err := Run(Config{Inputs: sampleInputs(), Tokenizer: demoTok(t), Out: out, ShardIndex: c[0], NumShards: c[1]})
		if err == nil {
			t.Errorf("shard %d of %d accepted", c[0], c[1])
		}
		if _, serr := os.Stat(out); serr == nil {
			t.Errorf("shard %d of %d: output directory created", c[0], c[1])
		}
	}
}

// TestLenHistIsSummarize: the histogram's statistics equal export.Summarize of the lengths.
func TestLenHistIsSummarize(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 2, 3, 19, 20, 21, 1000, 4571} {
		var h lenHist
		xs := make([]int, n)
		for i := range xs {
			xs[i] = r.IntN(50) + r.IntN(3000)*r.IntN(2)
			h.add(xs[i])
		}
		if got, want := h.dist(), export.Summarize(xs); got != want {
			t.Errorf("n=%d: histogram %+v, Summarize %+v", n, got, want)
		}
	}
}

// TestSpillRoundTrip: every field comes back, PromptAssistant in all its shapes included.
func TestSpillRoundTrip(t *testing.T) {
	sp, err := newSpill(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	marks := [][]bool{nil, {}, {false}, {true}, {true, true, false}, {false, false, true, true, false, true}}
	var exs []tokenize.Example
	for i, pa := range marks {
		ids := make([]int32, len(pa))
		for k := range ids {
			ids[k] = int32(1000*i + k)
		}
		exs = append(exs, tokenize.Example{PromptIDs: ids, CompletionIDs: []int32{int32(i), 2}, PromptAssistant: pa,
			Prompt: fmt.Sprint("p", i), Completion: "c", Label: i%2 == 0, Behavior: "b", Source: loader.Source{File: "f", Line: 1},
			Group: uint64(i) << 40, RepairedIDs: i, TextWithTools: i%3 == 0})
	}
	for i := range exs {
		if _, err := sp.Append(&exs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := sp.Finish(); err != nil {
		t.Fatal(err)
	}
	for i := len(exs) - 1; i >= 0; i-- {
		got, err := sp.Get(i)
		if err != nil {
			t.Fatal(err)
		}
		w := exs[i]
		if !slices.Equal(got.PromptIDs, w.PromptIDs) || !slices.Equal(got.CompletionIDs, w.CompletionIDs) ||
			!slices.Equal(got.PromptAssistant, w.PromptAssistant) || (got.PromptAssistant == nil) != (w.PromptAssistant == nil) ||
			got.Prompt != w.Prompt || got.Completion != w.Completion || got.Label != w.Label || got.Behavior != w.Behavior ||
			got.Source != w.Source || got.Group != w.Group || got.RepairedIDs != w.RepairedIDs || got.TextWithTools != w.TextWithTools {
			t.Errorf("example %d: got %+v, want %+v", i, got, w)
		}
	}
}

// TestMergeShards: three shard runs merged verify like one run, hold the whole run's kto/
// rows (ids and label) and counts, number their files across the shards, and only the last
// batch of a split may be partial.
func TestMergeShards(t *testing.T) {
	tok := demoTok(t)
	kc := kto.Config{TestFrac: 0.2, Seed: 9, MaxLen: 1024, BatchSize: 5}
	wopt := export.WriterOptions{Format: export.FormatBoth, ShardRows: 30}
	dir := t.TempDir()
	whole := run(t, Config{Inputs: sampleInputs(), Tokenizer: tok, Out: filepath.Join(dir, "all"), KTO: kc, Writer: wopt})
	want := map[string]int{}
	for _, rs := range ktoRows(t, filepath.Join(dir, "all"), whole) {
		for _, r := range rs {
			want[rowKey(r)]++
		}
	}
	const N = 3
	var outs []string
	partial := 0
	for i := N - 1; i >= 0; i-- { // any order on the command line
		out := filepath.Join(dir, fmt.Sprint("shard", i))
		sm := run(t, Config{Inputs: sampleInputs(), Tokenizer: tok, Out: out, KTO: kc, Writer: wopt, NumShards: N, ShardIndex: i})
		outs = append(outs, out)
		for _, bi := range sm.KTO.Splits {
			if bi.LastBatch < int64(kc.BatchSize) {
				partial++
			}
		}
	}
	if partial < 2 {
		t.Fatalf("only %d partial batches among the shards: the test does not exercise re-batching", partial)
	}
	merged := filepath.Join(dir, "merged")
	m, err := Merge(MergeConfig{Inputs: outs, Out: merged})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := export.Verify(merged)
	if err != nil || !rep.OK() {
		t.Fatalf("verify: %v %+v", err, rep)
	}
	c, wc := m.Counts, whole.Counts
	if c.Read != wc.Read || c.Written != wc.Written || c.Rejected != wc.Rejected || !maps.Equal(c.Reasons, wc.Reasons) {
		t.Errorf("merged counts %+v, the whole run's %+v", c, wc)
	}
	if _, ok := c.Notes[NoteSkippedOtherShard]; ok {
		t.Errorf("merged notes still count skipped rows: %v", c.Notes)
	}
	if m.Config.ShardIndex != nil {
		t.Errorf("merged config keeps shard_index")
	}
	got := map[string]int{}
	for _, rs := range ktoRows(t, merged, m) {
		for _, r := range rs {
			got[rowKey(r)]++
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("merged kto/ holds %d distinct rows, the whole run %d (or their counts differ)", len(got), len(want))
	}
	if m.Tokens.Total.Count != whole.Tokens.Total.Count || m.Tokens.Total.Max != whole.Tokens.Total.Max {
		t.Errorf("merged tokens %+v, whole %+v", m.Tokens.Total, whole.Tokens.Total)
	}
	sft := 0
	for _, f := range m.Files {
		if f.Kind == export.KindSFT && f.Format == export.FormatParquet {
			sft++
		}
	}
	if sft < N {
		t.Errorf("%d sft/ parquet files, want one or more per shard", sft)
	}
	for split, bi := range m.KTO.Splits {
		if bi.Batches != (bi.Examples+int64(kc.BatchSize)-1)/int64(kc.BatchSize) {
			t.Errorf("%s: %d batches for %d examples of batch size %d: a partial batch is not last", split, bi.Batches, bi.Examples, kc.BatchSize)
		}
	}

	// Not the shards of one run: one missing, one twice, different flags.
	for name, in := range map[string][]string{"missing": outs[:2], "twice": {outs[0], outs[0], outs[1]}, "unsharded": {filepath.Join(dir, "all")}} {
		if _, err := Merge(MergeConfig{Inputs: in, Out: filepath.Join(dir, "bad-"+name)}); !errors.Is(err, ErrNotShards) {
			t.Errorf("%s: err %v, want ErrNotShards", name, err)
		}
	}
	other := filepath.Join(dir, "other")
	run(t, Config{Inputs: sampleInputs(), Tokenizer: tok, Out: other, KTO: kc, Writer: wopt, NumShards: N, ShardIndex: 0,
		ConfigEcho: export.RunConfig{Seed: 10}})
	if _, err := Merge(MergeConfig{Inputs: []string{other, outs[0], outs[1]}, Out: filepath.Join(dir, "bad-flags")}); !errors.Is(err, ErrNotShards) {
		t.Errorf("different flags: err %v, want ErrNotShards", err)
	}
}
