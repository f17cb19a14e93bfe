package kto

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ktoloader/ktoloader/tokenize"
)

const ig = IgnoreIndex

// TestPackSFTLayout is the row drawn in SFTPacker's doc, with both loss selections.
func TestPackSFTLayout(t *testing.T) {
	const a, b, c, d = 10, 11, 12, 13
	exs := []tokenize.Example{
		{PromptIDs: []int32{bos, a}, CompletionIDs: []int32{b, eos}, PromptAssistant: []bool{false, true}, Label: true},
		{PromptIDs: []int32{bos, c, d}, CompletionIDs: []int32{eos}, PromptAssistant: []bool{false, false, true}, Label: true},
		{PromptIDs: []int32{bos, 99}, CompletionIDs: []int32{98, eos}, Label: false}, // undesirable: not in sft/
	}
	cases := []struct {
		loss   string
		labels []int32
	}{
		{SFTLossCompletion, []int32{ig, ig, b, eos, ig, ig, ig, eos, ig, ig, ig, ig}},
		{SFTLossAllAssistant, []int32{ig, a, b, eos, ig, ig, d, eos, ig, ig, ig, ig}},
	}
	for _, tc := range cases {
		t.Run(tc.loss, func(t *testing.T) {
			rows, st, err := PackSFT(exs, Config{MaxLen: 12, SFTLoss: tc.loss})
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != 1 {
				t.Fatalf("%d rows, want 1", len(rows))
			}
			row := rows[0]
			wantIDs := []int32{bos, a, b, eos, bos, c, d, eos, 0, 0, 0, 0}
			wantPos := []int32{0, 1, 2, 3, 0, 1, 2, 3, 0, 0, 0, 0}
			if !slices.Equal(row.InputIDs, wantIDs) || !slices.Equal(row.PositionIDs, wantPos) ||
				!slices.Equal(row.Labels, tc.labels) || !slices.Equal(row.SeqLengths, []int32{4, 4}) {
				t.Errorf("row %+v\nwant ids %v labels %v positions %v seq_lengths [4 4]", row, wantIDs, tc.labels, wantPos)
			}
			if st.Tokens != 8 || st.Rows != 1 || st.Sequences != 2 || st.Fill != 8.0/12 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// TestPackSFTWindows: rows never mix windows, sequences keep their order within a row, and
// every desirable example comes back.
func TestPackSFTWindows(t *testing.T) {
	r := rand.New(rand.NewPCG(51, 52))
	exs := synthSet(r, 257, 180, 120)
	const window = 25
	rows, st, err := PackSFT(exs, Config{MaxLen: 256, SFTWindow: window})
	if err != nil {
		t.Fatal(err)
	}
	// Desirable examples in input order, numbered by window.
	var desirable []int
	for i, ex := range exs {
		if ex.Label {
			desirable = append(desirable, i)
		}
	}
	windowOf := map[int32]int{} // first prompt id after BOS names the example
	for k, i := range desirable {
		windowOf[exs[i].PromptIDs[1]] = k / window
	}
	got := 0
	for _, row := range rows {
		seqs, err := UnpackSFT(row)
		if err != nil {
			t.Fatal(err)
		}
		w := -1
		prev := int32(-1)
		for _, s := range seqs {
			id := s.InputIDs[1]
			if w >= 0 && windowOf[id] != w {
				t.Fatalf("row mixes windows %d and %d", w, windowOf[id])
			}
			w = windowOf[id]
			if id <= prev {
				t.Fatalf("sequences out of input order in a row")
			}
			prev = id
			got++
		}
		// seq_lengths sums to the unpadded length: PadID (0) and −100 from there on.
		sum := 0
		for _, l := range row.SeqLengths {
			sum += int(l)
		}
		for i := sum; i < len(row.InputIDs); i++ {
			if row.InputIDs[i] != 0 || row.Labels[i] != ig {
				t.Fatalf("seq_lengths sum to %d but position %d holds id %d label %d", sum, i, row.InputIDs[i], row.Labels[i])
			}
		}
	}
	if got != len(desirable) || st.Sequences != int64(len(desirable)) {
		t.Fatalf("%d sequences back, %d desirable, stats %+v", got, len(desirable), st)
	}
	t.Logf("%d desirable → %d rows of 256, fill %.3f", len(desirable), len(rows), st.Fill)
}

func TestPackSFTErrors(t *testing.T) {
	long := synth(0, 0, 10, 10, true, "b")
	if _, _, err := PackSFT([]tokenize.Example{long}, Config{MaxLen: 16}); !errors.Is(err, ErrTooLong) {
		t.Errorf("over-long: error %v, want ErrTooLong", err)
	}
	bad := synth(0, 0, 4, 2, true, "b")
	bad.PromptAssistant = []bool{true, false}
	if _, _, err := PackSFT([]tokenize.Example{bad}, Config{}); !errors.Is(err, ErrBadExample) {
		t.Errorf("misaligned mask: error %v, want ErrBadExample", err)
	}
	if _, err := NewSFTPacker(Config{SFTLoss: "everything"}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("bad SFTLoss: error %v, want ErrInvalidConfig", err)
	}
}

func TestUnpackSFTCorrupt(t *testing.T) {
	exs := []tokenize.Example{
		{PromptIDs: []int32{bos, 10}, CompletionIDs: []int32{11, eos}, Label: true},
		{PromptIDs: []int32{bos, 12}, CompletionIDs: []int32{eos}, Label: true},
	}
	fresh := func() SFTRow {
		rows, _, err := PackSFT(exs, Config{MaxLen: 10})
		if err != nil || len(rows) != 1 {
			t.Fatalf("PackSFT: %d rows, %v", len(rows), err)
		}
		return rows[0]
	}
	if _, err := UnpackSFT(fresh()); err != nil {
		t.Fatalf("valid row refused: %v", err)
	}
	cases := []struct {
		name   string
		mutate func(*SFTRow)
	}{
		{"seq_lengths too long", func(r *SFTRow) { r.SeqLengths[1] = 7 }},
		{"seq_lengths zero", func(r *SFTRow) { r.SeqLengths[1] = 0 }},
		{"seq_lengths short", func(r *SFTRow) { r.SeqLengths[1] = 2 }}, // leaves a token that looks like padding
		{"position does not restart", func(r *SFTRow) { r.PositionIDs[4] = 4 }},
		{"label not the id", func(r *SFTRow) { r.Labels[2] = 99 }},
		{"label on padding", func(r *SFTRow) { r.Labels[8] = r.InputIDs[8] }},
		{"position on padding", func(r *SFTRow) { r.PositionIDs[9] = 3 }},
		{"column length", func(r *SFTRow) { r.Labels = r.Labels[:9] }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := fresh()
			tc.mutate(&r)
			if _, err := UnpackSFT(r); !errors.Is(err, ErrBadRow) {
				t.Errorf("error %v, want ErrBadRow", err)
			}
		})
	}
}

func BenchmarkPackSFT(b *testing.B) {
	r := rand.New(rand.NewPCG(53, 54))
	exs := make([]tokenize.Example, 20000)
	tokens := 0
	for i := range exs {
		l := min(32+int(600*r.ExpFloat64()), 2048)
		p := max(2, l*3/4)
		exs[i] = synth(i, i, p, max(1, l-p), true, "b")
		tokens += len(exs[i].PromptIDs) + len(exs[i].CompletionIDs)
	}
	var st PackStats
	for b.Loop() {
		var err error
		if _, st, err = PackSFT(exs, Config{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(tokens)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
	b.ReportMetric(st.Fill, "fill")
}
