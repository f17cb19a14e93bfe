package kto

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ktoloader/ktoloader/tokenize"
)

// trlKL re-implements TRL's KL pairing from its source, for rows in dataset order.
// KTOTrainer maps _get_kl_dataset over the dataset with batched=True and
// batch_size=per_device_train_batch_size, so it sees consecutive chunks of B rows (the last
// one shorter), and does (trl/trainer/kto_trainer.py, b12c2cf):
//
//	batch["answer_input_ids"] = [batch["answer_input_ids"][-1]] + batch["answer_input_ids"][:-1]
func trlKL(completions [][]int32, B int) [][]int32 {
	var out [][]int32
	for start := 0; start < len(completions); start += B {
		chunk := completions[start:min(start+B, len(completions))]
		rotated := append([][]int32{chunk[len(chunk)-1]}, chunk[:len(chunk)-1]...)
		out = append(out, rotated...)
	}
	return out
}

// trlCollate is what TRL's DataCollatorForUnpairedPreference does to one KL sequence
// (trl/experimental/kto/kto_trainer.py): full_ids = prompt_ids + answer_ids, then
// full_ids[: self.max_length].
func trlCollate(prompt, answer []int32, maxLen int) []int32 {
	full := concat(prompt, answer)
	return full[:min(len(full), maxLen)]
}

func TestBatchesKLMatchesTRL(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	cases := []struct {
		name         string
		n, nD, B     int
		maxSeq, maxL int
	}{
		{"even", 64, 32, 8, 40, 64},
		{"partial last", 21, 9, 8, 40, 64},
		{"singleton last", 17, 5, 8, 40, 64},
		{"all desirable", 12, 12, 4, 40, 64},
		{"none desirable", 12, 0, 4, 40, 64},
		{"pairs", 9, 4, 2, 40, 64},
		{"KL cut", 50, 20, 5, 64, 64}, // long prompts meet long completions
		{"one example", 1, 1, 8, 10, 16},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			exs := synthSet(r, tc.n, tc.nD, tc.maxSeq)
			cfg := Config{BatchSize: tc.B, MaxLen: tc.maxL, Seed: 42}
			rows, st, err := Batches(exs, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != tc.n {
				t.Fatalf("%d rows for %d examples", len(rows), tc.n)
			}
			comps := make([][]int32, len(rows))
			for i, row := range rows {
				comps[i] = row.CompletionIDs
				if row.BatchIndex != int64(i/tc.B) {
					t.Fatalf("row %d in batch %d, want %d (consecutive runs of BatchSize)", i, row.BatchIndex, i/tc.B)
				}
			}
			want := trlKL(comps, tc.B)
			cut := 0
			for i, row := range rows {
				full := trlCollate(row.PromptIDs, want[i], tc.maxL)
				if len(full) < len(row.PromptIDs)+len(want[i]) {
					cut++
				}
				if got := concat(row.PromptIDs, row.KLCompletionIDs); !slices.Equal(got, full) {
					t.Fatalf("row %d: prompt+KL %v, TRL pairs and collates %v", i, got, full)
				}
			}
			if int(st.KLTruncated) != cut {
				t.Errorf("KLTruncated = %d, TRL's collator cut %d", st.KLTruncated, cut)
			}
			if tc.name == "KL cut" && cut == 0 {
				t.Error("case meant to cut KL completions cut none")
			}
		})
	}
}

// TestPlanBatchesBalance checks the composition rules on many random label counts.
func TestPlanBatchesBalance(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	for trial := 0; trial < 2000; trial++ {
		n := r.IntN(120)
		nD := 0
		if n > 0 {
			nD = r.IntN(n + 1)
		}
		B := 2 + r.IntN(15)
		cfg := Config{BatchSize: B, Seed: int64(trial), DropLast: r.IntN(4) == 0}
		keys := make([]Key, n)
		for i := range keys {
			keys[i] = Key{Hash: uint64(i) * 7919, Label: i < nD}
		}
		batches, st, err := PlanBatches(keys, cfg)
		if err != nil {
			t.Fatal(err)
		}
		wantDropped := 0
		if cfg.DropLast {
			wantDropped = n % B
		}
		examples := int(st.Examples)
		if int(st.Dropped) != wantDropped || examples != n-wantDropped {
			t.Fatalf("n=%d B=%d: dropped %d, examples %d", n, B, st.Dropped, st.Examples)
		}
		seen := map[int]bool{}
		fullD := []int{}
		lackD, lackU := 0, 0
		for k, b := range batches {
			want := B
			if k == len(batches)-1 && examples%B != 0 {
				want = examples % B
			}
			if len(b) != want {
				t.Fatalf("n=%d B=%d: batch %d of %d has %d rows, want %d", n, B, k, len(batches), len(b), want)
			}
			d := 0
			for _, i := range b {
				if seen[i] {
					t.Fatalf("example %d batched twice", i)
				}
				seen[i] = true
				if keys[i].Label {
					d++
				}
			}
			// Interleaving: after j+1 rows, the desirable count is within 1 of its share.
			for j := range b {
				dj := 0
				for _, i2 := range b[:j+1] {
					if keys[i2].Label {
						dj++
					}
				}
				if share := float64(j+1) * float64(d) / float64(len(b)); math.Abs(float64(dj)-share) >= 1 {
					t.Fatalf("batch %d not interleaved: %d desirable in the first %d rows, share %.2f", k, dj, j+1, share)
				}
			}
			if len(b) == B {
				fullD = append(fullD, d)
			}
			if d == 0 {
				lackD++
			}
			if d == len(b) {
				lackU++
			}
		}
		if len(seen) != examples {
			t.Fatalf("%d examples batched, stats say %d", len(seen), st.Examples)
		}
		if len(fullD) > 0 && slices.Max(fullD)-slices.Min(fullD) > 1 {
			t.Fatalf("n=%d nD=%d B=%d: full batches hold %v desirable: surplus not spread", n, nD, B, fullD)
		}
		if lackD != int(st.NoDesirable) || lackU != int(st.NoUndesirable) {
			t.Fatalf("lacking counts %d/%d, stats %d/%d", lackD, lackU, st.NoDesirable, st.NoUndesirable)
		}
		// Both labels in every batch while both remain: the batches without a label are the
		// fewest the counts allow. A last batch of one row lacks a label whatever we do.
		nb := len(batches)
		minD, minU := max(0, nb-int(st.Desirable)), max(0, nb-int(st.Undesirable))
		if nb > 0 && len(batches[nb-1]) == 1 {
			if lackD > minD+1 || lackU > minU+1 {
				t.Fatalf("n=%d nD=%d B=%d: %d/%d batches lack a label, least %d/%d (+1 singleton)", n, nD, B, lackD, lackU, minD, minU)
			}
		} else if lackD != minD || lackU != minU {
			t.Fatalf("n=%d nD=%d B=%d: %d/%d batches lack a label, least %d/%d", n, nD, B, lackD, lackU, minD, minU)
		}
	}
}

func sources(rows []KTORow) []string {
	s := make([]string, len(rows))
	for i, r := range rows {
		s[i] = r.Source
	}
	return s
}

func TestBatchesDeterministic(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	exs := synthSet(r, 203, 71, 30)
	cfg := Config{Seed: 7}
	a, sa, err := Batches(exs, cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, sb, _ := Batches(exs, cfg)
	if !slices.Equal(sources(a), sources(b)) || sa != sb {
		t.Fatal("same input and seed, different batches")
	}
	// The order comes from the seed and content, not from where examples sit in the input.
	shuffled := slices.Clone(exs)
	r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	c, _, _ := Batches(shuffled, cfg)
	if !slices.Equal(sources(a), sources(c)) {
		t.Error("shuffled input, different batches")
	}
	d, _, _ := Batches(exs, Config{Seed: 8})
	if slices.Equal(sources(a), sources(d)) {
		t.Error("seeds 7 and 8 gave the same order")
	}
}

func TestBatchesRejects(t *testing.T) {
	long := synth(0, 0, 10, 10, true, "b")
	_, _, err := Batches([]tokenize.Example{long}, Config{MaxLen: 16})
	var le *LengthError
	if !errors.As(err, &le) || le.Len != 20 || le.MaxLen != 16 {
		t.Errorf("over-long example: error %v, want a LengthError 20 > 16", err)
	}
	empty := synth(0, 0, 3, 0, true, "b")
	if _, _, err := Batches([]tokenize.Example{empty}, Config{}); !errors.Is(err, ErrBadExample) {
		t.Errorf("empty completion: error %v, want ErrBadExample", err)
	}
	if _, _, err := Batches(nil, Config{BatchSize: 1}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("BatchSize 1: error %v, want ErrInvalidConfig", err)
	}
}

// trlWarns re-implements TRL's desirability check from its source (KTOTrainer, "calculate
// dataset desirability balance"); Python's round is half-to-even.
func trlWarns(nD, nU int, wD, wU float64) bool {
	numD := max(nD, 1)
	numU := max(nD+nU-numD, 1)
	if numD == numU {
		return false
	}
	round := func(x float64) float64 { return math.RoundToEven(x*100) / 100 }
	desLo := round(float64(numU) * wU / float64(numD) * 1)
	desHi := round(float64(numU) * wU / float64(numD) * 1.33)
	undLo := round(float64(numD) * wD / float64(numU) / 1.33)
	undHi := round(float64(numD) * wD / float64(numU) / 1)
	desIn := desLo <= wD && wD <= desHi
	undIn := undLo <= wU && wU <= undHi
	return !(desIn || undIn)
}

func TestSuggestWeights(t *testing.T) {
	for nD := 1; nD <= 300; nD++ {
		for nU := 1; nU <= 300; nU++ {
			wD, wU := SuggestWeights(nD, nU)
			if trlWarns(nD, nU, wD, wU) {
				t.Fatalf("SuggestWeights(%d, %d) = %v, %v: TRL warns", nD, nU, wD, wU)
			}
			if !trlWarns(nD, nU, 1, 1) && (wD != 1 || wU != 1) {
				t.Fatalf("SuggestWeights(%d, %d) = %v, %v: 1/1 already passes TRL's check", nD, nU, wD, wU)
			}
			if wD < 1 || wU < 1 || (wD != 1 && wU != 1) {
				t.Fatalf("SuggestWeights(%d, %d) = %v, %v: want one weight raised, the other 1", nD, nU, wD, wU)
			}
			if wD > 1 && nD >= nU || wU > 1 && nU >= nD {
				t.Fatalf("SuggestWeights(%d, %d) = %v, %v: raised the majority", nD, nU, wD, wU)
			}
		}
	}
	// The documented midpoint: 100 desirable, 400 undesirable → w_D = 1.165·4 = 4.66.
	if wD, wU := SuggestWeights(100, 400); wD != 4.66 || wU != 1 {
		t.Errorf("SuggestWeights(100, 400) = %v, %v, want 4.66, 1", wD, wU)
	}
	for _, c := range [][2]int{{0, 5}, {5, 0}, {0, 0}} {
		if wD, wU := SuggestWeights(c[0], c[1]); wD != 1 || wU != 1 {
			t.Errorf("SuggestWeights(%d, %d) = %v, %v, want 1, 1", c[0], c[1], wD, wU)
		}
	}
}
