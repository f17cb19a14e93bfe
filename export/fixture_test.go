package export

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/ktoloader/ktoloader/kto"
)

// fixture is a small, hand-built output directory that satisfies every invariant Verify
// checks. It is built without package kto's packer (a simple greedy fill, in order) so
// that Verify is tested against an independent construction; mutate edits the rows before
// they are written, and the manifest is always recomputed from what is written, so a
// violation found can only come from the rows themselves.
type fixture struct {
	maxLen, batchSize int
	kto               map[string][]kto.KTORow
	packed            map[string][]kto.PackedRow
	sft               map[string][]kto.SFTRow
	rejects           []string
	opt               WriterOptions
}

var fixtureSplits = []string{"test", "train"}

func newFixture() *fixture {
	f := &fixture{
		maxLen: 16, batchSize: 4,
		kto: map[string][]kto.KTORow{}, packed: map[string][]kto.PackedRow{}, sft: map[string][]kto.SFTRow{},
		rejects: []string{
			`{"file":"in.jsonl","line":3,"field":"label","reason":"missing_label","raw":"{}"}`,
			`{"file":"in.jsonl","line":7,"field":"","reason":"invalid_json","raw":"{"}`,
		},
		opt: WriterOptions{ShardRows: 3, RowGroupRows: 2},
	}
	sizes := map[string]int{"train": 10, "test": 3}
	for _, split := range fixtureSplits {
		var rows []kto.KTORow
		for i := 0; i < sizes[split]; i++ {
			p := 3 + i%3 // prompt 3..5 ids, completion 2..4: every sequence fits 16
			c := 2 + (i*7)%3
			prompt := make([]int32, p)
			prompt[0] = 1
			for k := 1; k < p; k++ {
				prompt[k] = int32(100 + 10*i + k)
			}
			comp := make([]int32, c)
			for k := range comp {
				comp[k] = int32(500 + 10*i + k)
			}
			comp[c-1] = 2
			rows = append(rows, kto.KTORow{
				PromptIDs: prompt, CompletionIDs: comp,
				Label:    i%3 != 1,
				Behavior: []string{"call", "answer"}[i%2],
				Prompt:   fmt.Sprintf("<s>[INST] q%d[/INST]", i), Completion: fmt.Sprintf(" a%d</s>", i),
				Source:     fmt.Sprintf("in.jsonl:%d", 10+i),
				BatchIndex: int64(i / f.batchSize),
			})
		}
		f.kto[split] = rows
	}
	f.derive()
	return f
}

// derive recomputes KL pairs, kto_packed and sft from the kto rows.
func (f *fixture) derive() {
	for _, split := range fixtureSplits {
		rows := f.kto[split]
		for start := 0; start < len(rows); start += f.batchSize {
			end := min(start+f.batchSize, len(rows))
			n := end - start
			for j := start; j < end; j++ {
				prev := start + (j-start+n-1)%n
				rows[j].KLCompletionIDs = rows[prev].CompletionIDs
			}
		}
		f.packed[split] = packGreedy(rows, f.maxLen)
		f.sft[split] = sftGreedy(rows, f.maxLen)
	}
}

// packGreedy fills kto_packed rows in order: example j's target, then its KL pair, a new
// row when the next sequence does not fit, and a new row for each batch.
func packGreedy(rows []kto.KTORow, maxLen int) []kto.PackedRow {
	var out []kto.PackedRow
	var cur *kto.PackedRow
	pos := 0
	batchStart := 0
	for j, r := range rows {
		if j > 0 && r.BatchIndex != rows[j-1].BatchIndex {
			cur = nil
			batchStart = j
		}
		for _, kl := range []bool{false, true} {
			comp := r.CompletionIDs
			if kl {
				comp = r.KLCompletionIDs
			}
			n := len(r.PromptIDs) + len(comp)
			if cur == nil || pos+n > maxLen {
				out = append(out, kto.PackedRow{
					InputIDs: make([]int32, maxLen), SegmentIDs: make([]int32, maxLen),
					PositionIDs: make([]int32, maxLen), LossMask: make([]int32, maxLen),
					SegmentLabel: []int32{}, SegmentKL: []bool{}, SegmentSource: []string{}, SegmentExample: []int32{},
					BatchIndex: r.BatchIndex,
				})
				cur, pos = &out[len(out)-1], 0
			}
			seg := int32(len(cur.SegmentLabel) + 1)
			for k, id := range append(append([]int32{}, r.PromptIDs...), comp...) {
				cur.InputIDs[pos], cur.SegmentIDs[pos], cur.PositionIDs[pos] = id, seg, int32(k)
				if k >= len(r.PromptIDs) {
					cur.LossMask[pos] = 1
				}
				pos++
			}
			cur.SegmentLabel = append(cur.SegmentLabel, map[bool]int32{true: 1, false: 0}[r.Label])
			cur.SegmentKL = append(cur.SegmentKL, kl)
			cur.SegmentSource = append(cur.SegmentSource, r.Source)
			cur.SegmentExample = append(cur.SegmentExample, int32(j-batchStart))
		}
	}
	return out
}

// sftGreedy fills sft rows with the desirable examples in order, labels -100 on the prompt
// and on padding.
func sftGreedy(rows []kto.KTORow, maxLen int) []kto.SFTRow {
	var out []kto.SFTRow
	var cur *kto.SFTRow
	pos := 0
	for _, r := range rows {
		if !r.Label {
			continue
		}
		n := len(r.PromptIDs) + len(r.CompletionIDs)
		if cur == nil || pos+n > maxLen {
			out = append(out, kto.SFTRow{
				InputIDs: make([]int32, maxLen), Labels: make([]int32, maxLen),
				PositionIDs: make([]int32, maxLen), SeqLengths: []int32{},
			})
			cur, pos = &out[len(out)-1], 0
			for k := range cur.Labels {
				cur.Labels[k] = IgnoreIndex
			}
		}
		for k, id := range append(append([]int32{}, r.PromptIDs...), r.CompletionIDs...) {
			cur.InputIDs[pos], cur.PositionIDs[pos] = id, int32(k)
			if k >= len(r.PromptIDs) {
				cur.Labels[pos] = id
			}
			pos++
		}
		cur.SeqLengths = append(cur.SeqLengths, int32(n))
	}
	return out
}

// write writes the fixture to dir with a manifest computed from the rows.
func (f *fixture) write(t *testing.T, dir string) *Manifest {
	t.Helper()
	m := NewManifest()
	m.Config = RunConfig{MaxLen: f.maxLen, KTOBatchSize: f.batchSize, SFTLoss: "completion", Seed: 42}
	m.Inputs = []Input{{Name: "in.jsonl", SHA256: "00", Bytes: 123}}
	m.Tokenizer = TokenizerInfo{Name: "demo", Kind: "sentencepiece", SHA256: "11", Demo: true, VocabSize: 1000}
	m.Packing.MaxLen = f.maxLen
	m.KTO.BatchSize = f.batchSize
	for _, split := range fixtureSplits {
		sc := SplitCounts{Behaviors: map[string]LabelCounts{}}
		bi := BatchInfo{}
		for i, r := range f.kto[split] {
			sc.Examples++
			lc := sc.Behaviors[r.Behavior]
			if r.Label {
				sc.Desirable++
				lc.Desirable++
			} else {
				sc.Undesirable++
				lc.Undesirable++
			}
			sc.Behaviors[r.Behavior] = lc
			if i == 0 || r.BatchIndex != f.kto[split][i-1].BatchIndex {
				bi.Batches++
				bi.LastBatch = 0
			}
			bi.LastBatch++
		}
		bi.Examples, bi.Desirable, bi.Undesirable = sc.Examples, sc.Desirable, sc.Undesirable
		m.Counts.Splits[split] = sc
		m.Counts.Written += sc.Examples
		m.KTO.Splits[split] = bi
		m.Packing.KTOPacked[split] = packInfo(f.maxLen, len(f.packed[split]), func(yield func([]int32) bool) {
			for _, r := range f.packed[split] {
				if !yield(r.SegmentIDs) {
					return
				}
			}
		})
		var seqs, tokens int64
		for _, r := range f.sft[split] {
			for _, l := range r.SeqLengths {
				seqs++
				tokens += int64(l)
			}
		}
		m.Packing.SFT[split] = PackInfo{Rows: int64(len(f.sft[split])), Sequences: seqs, Tokens: tokens,
			Fill: float64(tokens) / float64(int64(len(f.sft[split]))*int64(f.maxLen))}
		m.Files = append(m.Files, writeShards(t, dir, KindKTO, split, f.opt, f.kto[split])...)
		m.Files = append(m.Files, writeShards(t, dir, KindKTOPacked, split, f.opt, f.packed[split])...)
		m.Files = append(m.Files, writeShards(t, dir, KindSFT, split, f.opt, f.sft[split])...)
	}
	m.Counts.Rejected = int64(len(f.rejects))
	m.Counts.Read = m.Counts.Written + m.Counts.Rejected
	m.Counts.Reasons = map[string]int64{"missing_label": 1, "invalid_json": 1}
	var rej []byte
	for _, r := range f.rejects {
		rej = append(rej, r+"\n"...)
	}
	if err := WriteFileAtomic(filepath.Join(dir, RejectsName), rej); err != nil {
		t.Fatal(err)
	}
	if err := WriteManifest(dir, m); err != nil {
		t.Fatal(err)
	}
	return m
}

func packInfo(maxLen, rows int, segIDs func(func([]int32) bool)) PackInfo {
	var seqs, tokens int64
	for ids := range segIDs {
		last := int32(0)
		for _, s := range ids {
			if s != 0 {
				tokens++
				if s != last {
					seqs++
				}
			}
			last = s
		}
	}
	return PackInfo{Rows: int64(rows), Sequences: seqs, Tokens: tokens, Fill: float64(tokens) / float64(int64(rows)*int64(maxLen))}
}

func writeShards[T any](t *testing.T, dir, kind, split string, opt WriterOptions, rows []T) []FileInfo {
	t.Helper()
	w, err := NewShardWriter[T](dir, kind, split, opt)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(rows...); err != nil {
		t.Fatal(err)
	}
	files, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// normalize turns nil slices into empty ones, so that rows compare equal however a reader
// represents an empty list.
func normalize[T any](rows []T) []T {
	out := make([]T, len(rows))
	for i := range rows {
		out[i] = rows[i]
		v := reflect.ValueOf(&out[i]).Elem()
		for j := 0; j < v.NumField(); j++ {
			if f := v.Field(j); f.Kind() == reflect.Slice && f.IsNil() {
				f.Set(reflect.MakeSlice(f.Type(), 0, 0))
			}
		}
	}
	return out
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
