package kto

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ktoloader/ktoloader/tokenize"
)

func TestPackTable(t *testing.T) {
	cases := []struct {
		name    string
		lengths []int
		maxLen  int
		want    [][]int
		wantErr error
	}{
		{name: "empty", lengths: nil, maxLen: 8, want: nil},
		{name: "one", lengths: []int{5}, maxLen: 8, want: [][]int{{0}}},
		{name: "exact fit", lengths: []int{3, 5}, maxLen: 8, want: [][]int{{0, 1}}},
		{name: "one each", lengths: []int{5, 5, 5}, maxLen: 8, want: [][]int{{0}, {1}, {2}}},
		// Decreasing: 6 opens bin 0, 5 bin 1; 3 fits only bin 1 (room 3); 2 goes to the
		// fullest bin it fits: bin 0 (room 2), not a later one.
		{name: "best fit", lengths: []int{3, 6, 2, 5}, maxLen: 8, want: [][]int{{1, 2}, {0, 3}}},
		// 7 opens bin 0 (room 3), the 4s fill bin 1 to room 2; the 1 goes to bin 1, the
		// fuller, where first fit would take bin 0.
		{name: "best not first", lengths: []int{4, 1, 7, 4}, maxLen: 10, want: [][]int{{2}, {0, 1, 3}}},
		{name: "ties by index", lengths: []int{4, 4, 4, 4}, maxLen: 8, want: [][]int{{0, 1}, {2, 3}}},
		{name: "zero length", lengths: []int{0, 8, 0}, maxLen: 8, want: [][]int{{0, 1, 2}}},
		{name: "full length", lengths: []int{8, 8}, maxLen: 8, want: [][]int{{0}, {1}}},
		{name: "too long", lengths: []int{3, 9}, maxLen: 8, wantErr: ErrTooLong},
		{name: "negative", lengths: []int{-1}, maxLen: 8, wantErr: ErrInvalidConfig},
		{name: "no room", lengths: []int{1}, maxLen: 0, wantErr: ErrInvalidConfig},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Pack(tc.lengths, tc.maxLen)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Pack(%v, %d) error %v, want %v", tc.lengths, tc.maxLen, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(got, tc.want, slices.Equal[[]int]) {
				t.Errorf("Pack(%v, %d) = %v, want %v", tc.lengths, tc.maxLen, got, tc.want)
			}
		})
	}
}

// checkBins asserts that bins hold every item exactly once and none overflows.
func checkBins(t *testing.T, lengths []int, maxLen int, bins [][]int) {
	t.Helper()
	seen := make([]int, len(lengths))
	for b, bin := range bins {
		sum := 0
		for _, it := range bin {
			if it < 0 || it >= len(lengths) {
				t.Fatalf("bin %d holds item %d of %d", b, it, len(lengths))
			}
			seen[it]++
			sum += lengths[it]
		}
		if sum > maxLen {
			t.Fatalf("bin %d holds %d > %d", b, sum, maxLen)
		}
		if len(bin) == 0 {
			t.Fatalf("bin %d is empty", b)
		}
		if !slices.IsSorted(bin) {
			t.Fatalf("bin %d not in index order: %v", b, bin)
		}
	}
	for it, n := range seen {
		if n != 1 {
			t.Fatalf("item %d (length %d) packed %d times", it, lengths[it], n)
		}
	}
}

// optimum is the fewest bins for lengths, by the exact subset DP: best[mask] is the least
// (bins, load of the open bin) over orders of the items in mask.
func optimum(lengths []int, maxLen int) int {
	n := len(lengths)
	type state struct{ bins, load int }
	best := make([]state, 1<<n)
	for m := 1; m < 1<<n; m++ {
		best[m] = state{bins: n + 1}
		for i := 0; i < n; i++ {
			if m&(1<<i) == 0 {
				continue
			}
			prev := best[m&^(1<<i)]
			next := prev
			if prev.bins > 0 && prev.load+lengths[i] <= maxLen {
				next.load += lengths[i]
			} else {
				next = state{prev.bins + 1, lengths[i]}
			}
			if next.bins < best[m].bins || (next.bins == best[m].bins && next.load < best[m].load) {
				best[m] = next
			}
		}
	}
	return best[1<<n-1].bins
}

// naiveBFD is best-fit-decreasing written the obvious way, as a reference for Pack's tree.
func naiveBFD(lengths []int, maxLen int) (loads []int) {
	sorted := slices.Clone(lengths)
	slices.SortFunc(sorted, func(a, b int) int { return b - a })
	for _, l := range sorted {
		best := -1
		for b, load := range loads {
			if load+l <= maxLen && (best < 0 || load > loads[best]) {
				best = b
			}
		}
		if best < 0 {
			loads = append(loads, l)
		} else {
			loads[best] += l
		}
	}
	return loads
}

func binLoads(lengths []int, bins [][]int) []int {
	loads := make([]int, len(bins))
	for b, bin := range bins {
		for _, it := range bin {
			loads[b] += lengths[it]
		}
	}
	return loads
}

// TestPackAgainstOptimum holds BFD to 11/9·OPT + 6/9 on small random inputs where OPT is
// found by brute force, and to the naive BFD's bin loads (bins of equal room are
// interchangeable, so any tie-break gives the same loads).
func TestPackAgainstOptimum(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	worst := 0.0
	for trial := 0; trial < 3000; trial++ {
		maxLen := 4 + r.IntN(30)
		n := 1 + r.IntN(10)
		lengths := make([]int, n)
		for i := range lengths {
			// Mix of item sizes, with many around maxLen/3 and maxLen/2 where BFD errs.
			switch r.IntN(3) {
			case 0:
				lengths[i] = 1 + r.IntN(maxLen)
			case 1:
				lengths[i] = max(1, maxLen/3+r.IntN(3)-1)
			default:
				lengths[i] = max(1, maxLen/2+r.IntN(3)-1)
			}
		}
		bins, err := Pack(lengths, maxLen)
		if err != nil {
			t.Fatal(err)
		}
		checkBins(t, lengths, maxLen, bins)
		opt := optimum(lengths, maxLen)
		if 9*len(bins) > 11*opt+6 {
			t.Fatalf("Pack(%v, %d): %d bins, optimum %d: over 11/9·OPT + 6/9", lengths, maxLen, len(bins), opt)
		}
		worst = max(worst, float64(len(bins))/float64(opt))
		got := binLoads(lengths, bins)
		want := naiveBFD(lengths, maxLen)
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("Pack(%v, %d) loads %v, naive BFD %v", lengths, maxLen, got, want)
		}
	}
	t.Logf("worst BFD/OPT ratio seen: %.3f", worst)
}

func TestPackLarge(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	lengths := make([]int, 5000)
	for i := range lengths {
		lengths[i] = 1 + r.IntN(2048)
	}
	bins, err := Pack(lengths, 2048)
	if err != nil {
		t.Fatal(err)
	}
	checkBins(t, lengths, 2048, bins)
	got := binLoads(lengths, bins)
	want := naiveBFD(lengths, 2048)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("loads differ from the naive BFD: %d bins vs %d", len(got), len(want))
	}
}

// packRoundTrip packs sequences of the given lengths both as one KTO batch and as SFT, and
// checks that unpacking gives them back. It is shared by the table test and FuzzPack.
func packRoundTrip(t *testing.T, lengths []int, maxLen int) {
	t.Helper()
	cfg := Config{MaxLen: maxLen, SFTWindow: 7, PadID: 3}
	batch := make([]KTORow, 0, len(lengths))
	var exs []tokenize.Example
	for i, l := range lengths {
		if l < 2 || l > maxLen {
			continue
		}
		pLen := 1 + (l-1)/2
		ex := synth(i, i, pLen, l-pLen, true, "b")
		exs = append(exs, ex)
		batch = append(batch, KTORow{PromptIDs: ex.PromptIDs, CompletionIDs: ex.CompletionIDs, Label: i%2 == 0, Source: ex.Source.String(), BatchIndex: 7})
	}
	for j := range batch {
		prev := batch[(j+len(batch)-1)%len(batch)].CompletionIDs
		batch[j].KLCompletionIDs = prev[:min(len(prev), maxLen-len(batch[j].PromptIDs))]
	}

	rows, st, err := PackBatch(batch, cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := map[[2]int32][]int32{} // (example, kl) → prompt+completion
	var tokens int64
	for _, row := range rows {
		if len(row.InputIDs) != maxLen || row.BatchIndex != 7 {
			t.Fatalf("row of %d tokens, batch %d", len(row.InputIDs), row.BatchIndex)
		}
		seqs, err := UnpackKTO(row)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range seqs {
			k := [2]int32{s.Example, 0}
			if s.KL {
				k[1] = 1
			}
			if _, dup := got[k]; dup {
				t.Fatalf("sequence %v packed twice", k)
			}
			got[k] = concat(s.PromptIDs, s.CompletionIDs)
			tokens += int64(len(s.PromptIDs) + len(s.CompletionIDs))
			r := batch[s.Example]
			if s.Label != r.Label || s.Source != r.Source {
				t.Fatalf("sequence %v: label %v source %q, want %v %q", k, s.Label, s.Source, r.Label, r.Source)
			}
			want := r.CompletionIDs
			if s.KL {
				want = r.KLCompletionIDs
			}
			if !slices.Equal(s.PromptIDs, r.PromptIDs) || !slices.Equal(s.CompletionIDs, want) {
				t.Fatalf("sequence %v: got %v|%v, want %v|%v", k, s.PromptIDs, s.CompletionIDs, r.PromptIDs, want)
			}
		}
		for i, seg := range row.SegmentIDs {
			if seg == 0 && row.InputIDs[i] != 3 {
				t.Fatalf("padding id %d, want PadID 3", row.InputIDs[i])
			}
		}
	}
	if len(got) != 2*len(batch) {
		t.Fatalf("unpacked %d sequences, packed %d", len(got), 2*len(batch))
	}
	if st.Tokens != tokens || st.Rows != int64(len(rows)) || st.Sequences != int64(2*len(batch)) {
		t.Fatalf("stats %+v, counted %d tokens in %d rows", st, tokens, len(rows))
	}

	sft, sst, err := PackSFT(exs, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var back [][]int32
	for _, row := range sft {
		seqs, err := UnpackSFT(row)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range seqs {
			back = append(back, s.InputIDs)
		}
	}
	if len(back) != len(exs) || sst.Sequences != int64(len(exs)) {
		t.Fatalf("SFT: %d sequences back, %d in, stats %+v", len(back), len(exs), sst)
	}
	// Windows keep input order, rows within a window do not: compare as sets per window.
	for w := 0; w < len(exs); w += cfg.SFTWindow {
		end := min(w+cfg.SFTWindow, len(exs))
		var want, have []string
		for i := w; i < end; i++ {
			want = append(want, idsKey(concat(exs[i].PromptIDs, exs[i].CompletionIDs)))
			have = append(have, idsKey(back[i]))
		}
		slices.Sort(want)
		slices.Sort(have)
		if !slices.Equal(want, have) {
			t.Fatalf("SFT window at %d: sequences differ", w)
		}
	}
}

func idsKey(ids []int32) string {
	b := make([]byte, 0, 4*len(ids))
	for _, id := range ids {
		b = append(b, byte(id), byte(id>>8), byte(id>>16), byte(id>>24))
	}
	return string(b)
}

func TestPackRoundTrip(t *testing.T) {
	cases := []struct {
		name    string
		lengths []int
		maxLen  int
	}{
		{"single", []int{5}, 16},
		{"full rows", []int{16, 16, 16}, 16},
		{"mixed", []int{3, 9, 4, 12, 7, 2, 16, 5}, 16},
		{"many small", []int{2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2}, 8},
		{"minimal rows", []int{2, 2}, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { packRoundTrip(t, tc.lengths, tc.maxLen) })
	}
	r := rand.New(rand.NewPCG(5, 6))
	for trial := 0; trial < 200; trial++ {
		maxLen := 2 + r.IntN(200)
		lengths := make([]int, 1+r.IntN(40))
		for i := range lengths {
			lengths[i] = 2 + r.IntN(maxLen-1)
		}
		packRoundTrip(t, lengths, maxLen)
	}
}

// FuzzPack: Pack never loses, duplicates or overfills, and unpack(pack(x)) == x for KTO
// batches and SFT rows. data holds two bytes per length.
func FuzzPack(f *testing.F) {
	f.Add([]byte{5, 0, 3, 0, 8, 0}, uint16(8))
	f.Add([]byte{0, 8, 0, 4, 0, 4, 1, 0}, uint16(2048))
	f.Fuzz(func(t *testing.T, data []byte, m uint16) {
		maxLen := 2 + int(m%4096)
		var lengths []int
		for i := 0; i+1 < len(data) && len(lengths) < 300; i += 2 {
			lengths = append(lengths, int(uint16(data[i])|uint16(data[i+1])<<8)%(maxLen+1))
		}
		bins, err := Pack(lengths, maxLen)
		if err != nil {
			t.Fatal(err)
		}
		checkBins(t, lengths, maxLen, bins)
		// Any-fit rule: a bin opens only for an item that fits no open bin, so at most one
		// bin is at most half full.
		halfEmpty := 0
		for _, l := range binLoads(lengths, bins) {
			if 2*l <= maxLen {
				halfEmpty++
			}
		}
		if halfEmpty > 1 {
			t.Fatalf("%d bins at most half full", halfEmpty)
		}
		packRoundTrip(t, lengths, maxLen)
	})
}

func BenchmarkPack(b *testing.B) {
	r := rand.New(rand.NewPCG(7, 8))
	lengths := make([]int, 10000)
	tokens := 0
	for i := range lengths {
		// Chat-like: mostly short, a long tail.
		l := 32 + int(float64(600)*r.ExpFloat64())
		lengths[i] = min(l, 2048)
		tokens += lengths[i]
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := Pack(lengths, 2048); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(tokens)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
	b.ReportMetric(float64(len(lengths))*float64(b.N)/b.Elapsed().Seconds(), "seqs/s")
}
