package kto

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ktoloader/ktoloader/tokenize"
)

// groupedSet is examples in groups that share a prompt (1 to 4 examples each, as when one
// prompt has several rated completions), with behaviors of unequal frequency, labels mixed
// within groups, and prompt text on half of the groups (GroupKey then hashes the text).
func groupedSet(r *rand.Rand, groups int) []tokenize.Example {
	behaviors := []string{"tool_call", "tool_call", "tool_call", "text", "text", "refusal"}
	var exs []tokenize.Example
	for g := 0; g < groups; g++ {
		size := 1 + r.IntN(4)
		pLen := 2 + r.IntN(20)
		for k := 0; k < size; k++ {
			ex := synth(len(exs), g, pLen, 1+r.IntN(10), r.IntN(3) > 0, behaviors[r.IntN(len(behaviors))])
			if g%2 == 0 {
				ex.Prompt = fmt.Sprintf("<s>[INST] question %d[/INST]", g)
			}
			exs = append(exs, ex)
		}
	}
	return exs
}

func testSources(test []tokenize.Example) []string {
	var s []string
	for _, ex := range test {
		s = append(s, ex.Source.String())
	}
	slices.Sort(s)
	return s
}

func TestSplitGroupsAndStrata(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	exs := groupedSet(r, 1500)
	const frac = 0.1
	train, test, st, err := Split(exs, Config{TestFrac: frac, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(train)+len(test) != len(exs) || st.Train != len(train) || st.Test != len(test) {
		t.Fatalf("train %d + test %d != %d (stats %d/%d)", len(train), len(test), len(exs), st.Train, st.Test)
	}
	// No prompt on both sides; the prompt is identified here by its ids, independently of
	// GroupKey.
	side := map[string]bool{}
	for _, part := range []struct {
		exs  []tokenize.Example
		test bool
	}{{train, false}, {test, true}} {
		for _, ex := range part.exs {
			k := idsKey(ex.PromptIDs)
			if s, ok := side[k]; ok && s != part.test {
				t.Fatalf("prompt of %s on both sides", ex.Source)
			}
			side[k] = part.test
		}
	}
	// Realized per-stratum fractions, counted here, match the stats and the target.
	type cell struct {
		behavior string
		label    bool
	}
	total, inTest := map[cell]int{}, map[cell]int{}
	for _, ex := range exs {
		total[cell{ex.Behavior, ex.Label}]++
	}
	for _, ex := range test {
		inTest[cell{ex.Behavior, ex.Label}]++
	}
	if len(st.Strata) != len(total) {
		t.Fatalf("%d strata reported, %d present", len(st.Strata), len(total))
	}
	for _, s := range st.Strata {
		c := cell{s.Behavior, s.Label}
		if s.Total != total[c] || s.Test != inTest[c] {
			t.Fatalf("stratum %+v: counted %d/%d", s, inTest[c], total[c])
		}
		t.Logf("%-9s %-5v %4d/%4d = %.4f", s.Behavior, s.Label, s.Test, s.Total, s.TestFrac)
		// Within half a group (groups hold up to 4) of the target.
		if math.Abs(float64(s.Test)-frac*float64(s.Total)) > 2 {
			t.Errorf("stratum %s/%v: %d of %d in test, target %.1f", s.Behavior, s.Label, s.Test, s.Total, frac*float64(s.Total))
		}
	}
	reportOrder := func(a, b Stratum) int {
		if c := cmp.Compare(a.Behavior, b.Behavior); c != 0 {
			return c
		}
		switch {
		case a.Label == b.Label:
			return 0
		case a.Label:
			return -1
		}
		return 1
	}
	if !slices.IsSortedFunc(st.Strata, reportOrder) {
		t.Errorf("strata not in report order: %+v", st.Strata)
	}
}

func TestSplitDeterministic(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 24))
	exs := groupedSet(r, 400)
	cfg := Config{TestFrac: 0.2, Seed: 5}
	_, a, _, _ := Split(exs, cfg)
	_, b, _, _ := Split(exs, cfg)
	if !slices.Equal(testSources(a), testSources(b)) {
		t.Fatal("same input and seed, different test sets")
	}
	shuffled := slices.Clone(exs)
	r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	_, c, _, _ := Split(shuffled, cfg)
	if !slices.Equal(testSources(a), testSources(c)) {
		t.Error("shuffled input, different test set")
	}
	_, d, _, _ := Split(exs, Config{TestFrac: 0.2, Seed: 6})
	if slices.Equal(testSources(a), testSources(d)) {
		t.Error("seeds 5 and 6 gave the same test set")
	}
}

func TestSplitNone(t *testing.T) {
	r := rand.New(rand.NewPCG(25, 26))
	exs := groupedSet(r, 50)
	train, test, st, err := Split(exs, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if len(test) != 0 || len(train) != len(exs) || st.TestGroups != 0 || st.Groups != 50 {
		t.Errorf("TestFrac 0: %d train, %d test, stats %+v", len(train), len(test), st)
	}
	for _, bad := range []float64{-0.1, 1, math.NaN()} {
		if _, _, _, err := Split(exs, Config{TestFrac: bad}); err == nil {
			t.Errorf("TestFrac %v accepted", bad)
		}
	}
}

// TestSplitCarry splits a set in ten parts whose strata hold one example each: alone, each
// part rounds every stratum to no test example; carried from part to part, the shortfall
// makes the whole reach TestFrac of every stratum within one example.
func TestSplitCarry(t *testing.T) {
	cfg := Config{TestFrac: 0.2, Seed: 1}
	behaviors := []string{"a", "b", "c", "d", "e", "f"}
	carry := SplitCarry{}
	alone, carried := map[StratumKey]int{}, map[StratumKey]int{}
	for part := range 10 {
		var keys []Key
		for i, b := range behaviors {
			for _, label := range []bool{true, false} {
				g := uint64(part*1000 + i*10 + 1)
				if label {
					g++
				}
				keys = append(keys, Key{Group: g, Hash: g * 7, Label: label, Behavior: b})
			}
		}
		_, st, err := PlanSplit(keys, cfg)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range st.Strata {
			alone[StratumKey{s.Behavior, s.Label}] += s.Test
		}
		_, st, err = PlanSplitCarry(keys, cfg, carry)
		if err != nil {
			t.Fatal(err)
		}
		carry.Add(st)
		for _, s := range st.Strata {
			carried[StratumKey{s.Behavior, s.Label}] += s.Test
		}
	}
	for _, b := range behaviors {
		for _, label := range []bool{true, false} {
			k := StratumKey{b, label}
			if alone[k] != 0 {
				t.Errorf("%v: %d test examples without carry; the test assumes rounding to 0", k, alone[k])
			}
			if carried[k] < 1 || carried[k] > 3 { // 0.2 × 10 = 2
				t.Errorf("%v: %d test examples of 10 with the carry, want 2 ± 1", k, carried[k])
			}
		}
	}
}
