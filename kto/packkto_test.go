package kto

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestPackBatchLayout spells out two rows by hand. Example 0: prompt [1 a b], completion
// [c 2]; example 1: prompt [1 d], completion [e f 2]. KL pairs swap the completions. The four
// sequences are 5, 6, 5 and 4 tokens; BFD puts the first three into row 0 (16 tokens) and
// example 1's KL pair into row 1.
func TestPackBatchLayout(t *testing.T) {
	const a, b, c, d, e, f = 10, 11, 12, 13, 14, 15
	batch := []KTORow{
		{PromptIDs: []int32{bos, a, b}, CompletionIDs: []int32{c, eos}, KLCompletionIDs: []int32{e, f, eos}, Label: true, Source: "x:1", BatchIndex: 4},
		{PromptIDs: []int32{bos, d}, CompletionIDs: []int32{e, f, eos}, KLCompletionIDs: []int32{c, eos}, Label: false, Source: "x:2", BatchIndex: 4},
	}
	rows, st, err := PackBatch(batch, Config{MaxLen: 16, PadID: 0})
	if err != nil {
		t.Fatal(err)
	}
	want := []PackedRow{{
		InputIDs:       []int32{bos, a, b, c, eos, bos, a, b, e, f, eos, bos, d, e, f, eos},
		SegmentIDs:     []int32{1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3},
		PositionIDs:    []int32{0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4},
		LossMask:       []int32{0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1},
		SegmentLabel:   []int32{1, 1, 0},
		SegmentKL:      []bool{false, true, false},
		SegmentSource:  []string{"x:1", "x:1", "x:2"},
		SegmentExample: []int32{0, 0, 1},
		BatchIndex:     4,
	}, {
		InputIDs:       []int32{bos, d, c, eos, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		SegmentIDs:     []int32{1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		PositionIDs:    []int32{0, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		LossMask:       []int32{0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		SegmentLabel:   []int32{0},
		SegmentKL:      []bool{true},
		SegmentSource:  []string{"x:2"},
		SegmentExample: []int32{1},
		BatchIndex:     4,
	}}
	if len(rows) != len(want) {
		t.Fatalf("%d rows, want %d", len(rows), len(want))
	}
	for i := range want {
		g, w := rows[i], want[i]
		if !slices.Equal(g.InputIDs, w.InputIDs) || !slices.Equal(g.SegmentIDs, w.SegmentIDs) ||
			!slices.Equal(g.PositionIDs, w.PositionIDs) || !slices.Equal(g.LossMask, w.LossMask) ||
			!slices.Equal(g.SegmentLabel, w.SegmentLabel) || !slices.Equal(g.SegmentKL, w.SegmentKL) ||
			!slices.Equal(g.SegmentSource, w.SegmentSource) || !slices.Equal(g.SegmentExample, w.SegmentExample) ||
			g.BatchIndex != w.BatchIndex {
			t.Errorf("row %d:\n got %+v\nwant %+v", i, g, w)
		}
	}
	if st.Tokens != 20 || st.Rows != 2 || st.Sequences != 4 || st.Fill != 20.0/32 {
		t.Errorf("stats %+v, want 20 tokens in 2 rows of 16", st)
	}
}

// TestPackKTOPipeline runs split → batches → pack → unpack on synthetic data and checks that
// each batch comes back whole, alone in its rows.
func TestPackKTOPipeline(t *testing.T) {
	r := rand.New(rand.NewPCG(41, 42))
	exs := synthSet(r, 333, 120, 300)
	const maxLen = 512
	cfg := Config{MaxLen: maxLen, Seed: 9, BatchSize: 6}
	rows, _, err := Batches(exs, cfg)
	if err != nil {
		t.Fatal(err)
	}
	packed, st, err := PackKTO(rows, cfg)
	if err != nil {
		t.Fatal(err)
	}
	byBatch := map[int64][]KTORow{}
	for _, row := range rows {
		byBatch[row.BatchIndex] = append(byBatch[row.BatchIndex], row)
	}
	seen := map[[3]int64]bool{} // batch, example, kl
	var tokens int64
	lastBatch := int64(-1)
	for _, p := range packed {
		if len(p.InputIDs) != maxLen {
			t.Fatalf("row of %d tokens, MaxLen %d", len(p.InputIDs), maxLen)
		}
		if p.BatchIndex < lastBatch {
			t.Fatalf("batch %d after batch %d: rows out of batch order", p.BatchIndex, lastBatch)
		}
		lastBatch = p.BatchIndex
		seqs, err := UnpackKTO(p)
		if err != nil {
			t.Fatal(err)
		}
		batch := byBatch[p.BatchIndex]
		for _, s := range seqs {
			// Segment ids and sources name only rows of this batch: no row mixes batches.
			if int(s.Example) >= len(batch) || batch[s.Example].Source != s.Source {
				t.Fatalf("batch %d: segment names example %d (%s), not in the batch", p.BatchIndex, s.Example, s.Source)
			}
			row := batch[s.Example]
			want := row.CompletionIDs
			if s.KL {
				want = row.KLCompletionIDs
			}
			if !slices.Equal(s.PromptIDs, row.PromptIDs) || !slices.Equal(s.CompletionIDs, want) || s.Label != row.Label {
				t.Fatalf("batch %d example %d kl %v: sequence differs", p.BatchIndex, s.Example, s.KL)
			}
			k := [3]int64{p.BatchIndex, int64(s.Example), 0}
			if s.KL {
				k[2] = 1
			}
			if seen[k] {
				t.Fatalf("sequence %v packed twice", k)
			}
			seen[k] = true
			tokens += int64(len(s.PromptIDs) + len(s.CompletionIDs))
		}
	}
	if len(seen) != 2*len(rows) {
		t.Fatalf("%d sequences unpacked, %d packed", len(seen), 2*len(rows))
	}
	if st.Tokens != tokens || st.Rows != int64(len(packed)) {
		t.Fatalf("stats %+v; counted %d tokens in %d rows", st, tokens, len(packed))
	}
	if want := float64(tokens) / float64(len(packed)*maxLen); st.Fill != want {
		t.Fatalf("fill %v, want %v", st.Fill, want)
	}
	t.Logf("%d batches of 6 → %d rows of %d, fill %.3f", len(byBatch), len(packed), maxLen, st.Fill)
}

func TestPackBatchErrors(t *testing.T) {
	rows := []KTORow{
		{PromptIDs: []int32{bos}, CompletionIDs: []int32{eos}, KLCompletionIDs: []int32{eos}, BatchIndex: 0},
		{PromptIDs: []int32{bos}, CompletionIDs: []int32{eos}, KLCompletionIDs: []int32{eos}, BatchIndex: 1},
	}
	if _, _, err := PackBatch(rows, Config{}); !errors.Is(err, ErrMixedBatch) {
		t.Errorf("two batches: error %v, want ErrMixedBatch", err)
	}
	long := []KTORow{{PromptIDs: make([]int32, 10), CompletionIDs: make([]int32, 10), KLCompletionIDs: []int32{eos}}}
	if _, _, err := PackBatch(long, Config{MaxLen: 16}); !errors.Is(err, ErrTooLong) {
		t.Errorf("over-long sequence: error %v, want ErrTooLong", err)
	}
}

// TestUnpackKTOCorrupt breaks a valid row one invariant at a time.
func TestUnpackKTOCorrupt(t *testing.T) {
	batch := []KTORow{
		{PromptIDs: []int32{bos, 10}, CompletionIDs: []int32{11, eos}, KLCompletionIDs: []int32{12, eos}, Label: true, Source: "x:1"},
		{PromptIDs: []int32{bos, 20}, CompletionIDs: []int32{12, eos}, KLCompletionIDs: []int32{11, eos}, Source: "x:2"},
	}
	fresh := func() PackedRow {
		rows, _, err := PackBatch(batch, Config{MaxLen: 20})
		if err != nil || len(rows) != 1 {
			t.Fatalf("PackBatch: %d rows, %v", len(rows), err)
		}
		return rows[0]
	}
	if _, err := UnpackKTO(fresh()); err != nil {
		t.Fatalf("valid row refused: %v", err)
	}
	cases := []struct {
		name   string
		mutate func(*PackedRow)
	}{
		{"segment skips a number", func(p *PackedRow) { p.SegmentIDs[4], p.SegmentIDs[5], p.SegmentIDs[6], p.SegmentIDs[7] = 3, 3, 3, 3 }},
		{"segment after padding", func(p *PackedRow) { p.SegmentIDs[19] = 5 }},
		{"position does not restart", func(p *PackedRow) { p.PositionIDs[4] = 4 }},
		{"position skips", func(p *PackedRow) { p.PositionIDs[2] = 3 }},
		{"position on padding", func(p *PackedRow) { p.PositionIDs[18] = 1 }},
		{"loss on padding", func(p *PackedRow) { p.LossMask[18] = 1 }},
		{"loss on prompt after completion", func(p *PackedRow) { p.LossMask[3] = 0 }},
		{"loss mask value", func(p *PackedRow) { p.LossMask[2] = 2 }},
		{"segment label value", func(p *PackedRow) { p.SegmentLabel[0] = 7 }},
		{"per-segment list short", func(p *PackedRow) { p.SegmentKL = p.SegmentKL[:3] }},
		{"segment count", func(p *PackedRow) {
			p.SegmentLabel, p.SegmentKL = append(p.SegmentLabel, 1), append(p.SegmentKL, false)
			p.SegmentSource, p.SegmentExample = append(p.SegmentSource, ""), append(p.SegmentExample, 0)
		}},
		{"column length", func(p *PackedRow) { p.LossMask = p.LossMask[:19] }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := fresh()
			tc.mutate(&p)
			if _, err := UnpackKTO(p); !errors.Is(err, ErrBadRow) {
				t.Errorf("error %v, want ErrBadRow", err)
			}
		})
	}
}
