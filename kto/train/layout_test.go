package train

import (
	"slices"
	"testing"
)

func TestRoundShape(t *testing.T) {
	want := map[int]int{0: 1, 1: 1, 7: 7, 16: 16, 17: 18, 33: 36, 100: 104, 1000: 1024, 1024: 1024, 1025: 1152}
	for n, w := range want {
		if got := roundShape(n); got != w {
			t.Errorf("roundShape(%d) = %d, want %d", n, got, w)
		}
	}
	for n := 1; n < 5000; n++ {
		if r := roundShape(n); r < n || float64(r) > 1.125*float64(n) {
			t.Fatalf("roundShape(%d) = %d: not within 12.5%% above", n, r)
		}
	}
}

// TestBatchLayout lays out handBatch in blocks of 4, every value worked out by hand: the
// targets keep their tokens up to their last scored position (example 0: 1 11 12 5, example
// 1: 1 13 8); both KL pairs (1 13 | 8 and 1 11 | 5) share all their scored prefix with their
// example's target, so the KL group holds no token and scores the targets' tokens.
func TestBatchLayout(t *testing.T) {
	shape := Shape{MaxLen: 8, BatchSize: 2, VocabSize: 32}
	b, err := shape.convert(&rawBatch{index: 3, rows: handBatch(), file: "hand"})
	if err != nil {
		t.Fatal(err)
	}
	targets, kls, need := b.layoutNeed(shape.MaxLen, 4)
	if len(targets) != 2 || len(kls) != 2 || kls[0].prefix != 2 || kls[1].prefix != 2 {
		t.Fatalf("%d targets, %d KL pairs (%+v)", len(targets), len(kls), kls)
	}
	wantNeed := layoutDims{Target: groupDims{Blocks: 2, Pairs: 2, Labels: 4}, KL: groupDims{Labels: 2}}
	if need != wantNeed {
		t.Fatalf("need %+v, want %+v", need, wantNeed)
	}
	dims := layoutDims{need.Target.rounded(), need.KL.rounded()}
	l := newBatchLayout(targets, kls, 4, dims)
	tg, kl := l.Target, l.KL
	for _, c := range []struct {
		name      string
		got, want []int32
	}{
		{"target ids", tg.InputIDs, []int32{1, 11, 12, 5, 1, 13, 8, 0}},
		{"target positions", tg.PositionIDs, []int32{0, 1, 2, 3, 0, 1, 2, 0}},
		{"target pairs q", tg.PairQuery, []int32{0, 1}},
		{"target pairs k", tg.PairKey, []int32{0, 1}},
		{"target label positions", tg.LabelPos, []int32{2, 3, 5, 6}},
		{"target labels", tg.Labels, []int32{5, 6, 8, 9}},
		{"target slots", tg.Slots, []int32{0, 0, 1, 1}},
		// Row 0's KL pair (example 1) first: token 1 of example 1's target block (4+1).
		{"KL label positions", kl.LabelPos, []int32{5, 1}},
		{"KL labels", kl.Labels, []int32{8, 5}},
		{"KL slots", kl.Slots, []int32{1, 0}},
		// One padding block and one padding pair (block 0 with block 0).
		{"KL ids", kl.InputIDs, []int32{0, 0, 0, 0}},
		{"KL pairs q", kl.PairQuery, []int32{0}},
		{"KL pairs k", kl.PairKey, []int32{0}},
	} {
		if !slices.Equal(c.got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, c.got, c.want)
		}
	}
	const m = maskedScore
	wantBias := []float32{
		// pair (0, 0): 4 tokens, causal
		0, m, m, m,
		0, 0, m, m,
		0, 0, 0, m,
		0, 0, 0, 0,
		// pair (1, 1): 3 tokens and a padding query that sees nothing
		0, m, m, m,
		0, 0, m, m,
		0, 0, 0, m,
		m, m, m, m,
	}
	if !slices.Equal(tg.PairBias, wantBias) {
		t.Errorf("target bias\n got %v\nwant %v", tg.PairBias, wantBias)
	}
	for i, v := range kl.PairBias {
		if v != m {
			t.Fatalf("KL padding pair bias[%d] = %v, want masked", i, v)
		}
	}
}

// TestKLLayoutKeys lays out a KL pair whose own tokens follow a prefix shared with its
// target over more than one block: its pairs must see the target's prefix blocks (key
// indexes after none of the KL group's own) up to the prefix, then its own blocks causally.
func TestKLLayoutKeys(t *testing.T) {
	mk := func(example int32, ids ...int32) sequence {
		s := sequence{example: example, target: -1, ids: ids}
		for i := range ids {
			s.pos = append(s.pos, int32(i))
			if i+1 < len(ids) {
				s.labelIdx = append(s.labelIdx, i)
				s.labels = append(s.labels, ids[i+1])
				s.slots = append(s.slots, example)
			}
		}
		return s
	}
	// Target: 6 tokens scored up to index 4 (length 5: blocks of 4 → 2 blocks, 3 pairs).
	targets := []sequence{mk(0, 1, 2, 3, 4, 5, 6)}
	// KL: shares 1 2 3 4 5 (prefix 5), then 7 8 of its own (scored up to index 6).
	kls := []sequence{mk(0, 1, 2, 3, 4, 5, 7, 8, 9)}
	sharePrefixes(targets, kls)
	if kls[0].prefix != 5 {
		t.Fatalf("prefix %d, want 5", kls[0].prefix)
	}
	dims := layoutDims{Target: groupDims{Blocks: 3, Pairs: 3, Labels: 5}, KL: groupDims{Blocks: 1, Pairs: 3, Labels: 7}}
	if need := needDims(kls, 4); need != (groupDims{Blocks: 1, Pairs: 2 + 1, Labels: 7}) {
		t.Fatalf("KL needs %+v", need)
	}
	l := newBatchLayout(targets, kls, 4, dims)
	kl := l.KL
	// Own tokens 7 8 at KL block 0 (key index 3, after the target's 3 padded blocks); 9 comes
	// after the last scored position.
	if !slices.Equal(kl.InputIDs, []int32{7, 8, 0, 0}) || !slices.Equal(kl.PositionIDs, []int32{5, 6, 0, 0}) {
		t.Errorf("KL tokens %v at %v", kl.InputIDs, kl.PositionIDs)
	}
	if !slices.Equal(kl.PairQuery, []int32{0, 0, 0}) || !slices.Equal(kl.PairKey, []int32{0, 1, 3}) {
		t.Errorf("KL pairs %v → %v, want [0 0 0] → [0 1 3]", kl.PairQuery, kl.PairKey)
	}
	// Labels: indexes 0–4 in the target's tokens, 5 and 6 in the KL group's (12 = 3·4 + 0).
	if !slices.Equal(kl.LabelPos, []int32{0, 1, 2, 3, 4, 12, 13}) {
		t.Errorf("KL label positions %v", kl.LabelPos)
	}
	const m = maskedScore
	want := []float32{
		// target block 0 (tokens 0–3): all before the own queries (indexes 5 and 6; the
		// block's other two rows are padding queries that see nothing)
		0, 0, 0, 0,
		0, 0, 0, 0,
		m, m, m, m,
		m, m, m, m,
		// target block 1 (tokens 4–7): only token 4 is in the prefix
		0, m, m, m,
		0, m, m, m,
		m, m, m, m,
		m, m, m, m,
		// own block: causal over 2 tokens
		0, m, m, m,
		0, 0, m, m,
		m, m, m, m,
		m, m, m, m,
	}
	if !slices.Equal(kl.PairBias, want) {
		t.Errorf("KL bias\n got %v\nwant %v", kl.PairBias, want)
	}
}
