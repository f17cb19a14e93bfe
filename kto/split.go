package kto

import (
	"cmp"
	"slices"

	"github.com/ktoloader/ktoloader/tokenize"
)

// Key is what the split and the batch planner need of an example: about 40 bytes, so a caller
// can plan millions of examples while their ids stay wherever it keeps them (on disk, or
// re-tokenized later), and fetch each example by index when writing.
type Key struct {
	Group    uint64 // GroupKey: the prompt the example belongs to
	Hash     uint64 // the prompt+completion ids: orders examples whatever the input order
	Label    bool
	Behavior string
}

// KeyOf computes the Key of an example.
func KeyOf(ex *tokenize.Example) Key {
	return Key{
		Group:    GroupKey(ex),
		Hash:     hashIDs(hashIDs(fnvOffset, ex.PromptIDs), ex.CompletionIDs),
		Label:    ex.Label,
		Behavior: ex.Behavior,
	}
}

// GroupKey identifies an example's prompt: the split never puts one prompt on both sides.
// It hashes the rendered prompt text when present, because text names the conversation
// before and after Truncate (keep-end trims ids by an amount that depends on the completion,
// so two completions of one prompt could otherwise land in different groups); it hashes the
// prompt ids when the text is empty (synthetic examples). Equal texts give equal ids, so both
// define the same groups. A 64-bit collision only merges two groups, which keeps the
// no-prompt-on-both-sides guarantee.
func GroupKey(ex *tokenize.Example) uint64 {
	if ex.Group != 0 { // tokenize's request-level group (system message left out)
		return ex.Group
	}
	if ex.Prompt != "" {
		return hashString(fnvOffset, ex.Prompt)
	}
	return hashIDs(fnvOffset^1, ex.PromptIDs)
}

// Stratum is one behavior×label cell of the split.
type Stratum struct {
	Behavior string  `json:"behavior"`
	Label    bool    `json:"label"`
	Total    int     `json:"total"`
	Test     int     `json:"test"`
	TestFrac float64 `json:"test_frac"` // realized: Test / Total
}

// SplitStats reports a split: counts and, per stratum, the realized test fraction, which can
// differ from the asked one by about half a group per stratum.
type SplitStats struct {
	TestFrac   float64   `json:"test_frac"` // asked
	Groups     int       `json:"groups"`
	TestGroups int       `json:"test_groups"`
	Train      int       `json:"train"`
	Test       int       `json:"test"`
	Strata     []Stratum `json:"strata"` // by behavior, desirable before undesirable
}

// Split divides examples into train and test by PlanSplit; both keep the input order.
func Split(exs []tokenize.Example, cfg Config) (train, test []tokenize.Example, stats SplitStats, err error) {
	keys := make([]Key, len(exs))
	for i := range exs {
		keys[i] = KeyOf(&exs[i])
	}
	inTest, stats, err := PlanSplit(keys, cfg)
	if err != nil {
		return nil, nil, stats, err
	}
	train = make([]tokenize.Example, 0, stats.Train)
	test = make([]tokenize.Example, 0, stats.Test)
	for i := range exs {
		if inTest[i] {
			test = append(test, exs[i])
		} else {
			train = append(train, exs[i])
		}
	}
	return train, test, stats, nil
}

// groupCount is how many examples of one stratum a group holds.
type groupCount struct{ stratum, n int }

// PlanSplit says, per key, whether the example goes to test. Whole groups (prompts) move
// together. The split is stratified by behavior×label: groups are visited in an order drawn
// from the seed and each group's key (not its position in the input, so the split does not
// depend on input order), and a group joins test when that brings the test counts closer to
// TestFrac of every stratum, measured as Σ_s ((test_s − frac·n_s) / n_s)², so that small
// strata weigh as much as large ones; then passes in the same order move single groups
// either way while that helps. A stratum ends within about half a group of its target, so a
// stratum smaller than one group's worth of target (frac·n_s below half a group) gets no test
// examples.
func PlanSplit(keys []Key, cfg Config) ([]bool, SplitStats, error) {
	return PlanSplitCarry(keys, cfg, nil)
}

// StratumKey names a behavior×label stratum.
type StratumKey struct {
	Behavior string
	Label    bool
}

// Compare is the strata's report order (SplitStats.Strata): by behavior, desirable first.
func (a StratumKey) Compare(b StratumKey) int {
	if c := cmp.Compare(a.Behavior, b.Behavior); c != 0 {
		return c
	}
	if a.Label == b.Label {
		return 0
	}
	if a.Label {
		return -1
	}
	return 1
}

// SplitCarry is, per stratum, how many test examples earlier splits of the same data set
// fell short of TestFrac (negative: over). A caller that splits a large set in parts
// (pipeline's planning partitions) passes it from part to part, so that the rounding of
// each part's strata, up to half a group per stratum and part, does not add up: a rare
// behavior with one example per part would otherwise never reach test.
type SplitCarry map[StratumKey]float64

// Add records a split's outcome: what each stratum was short of TestFrac of its total.
func (c SplitCarry) Add(st SplitStats) {
	for _, s := range st.Strata {
		c[StratumKey{s.Behavior, s.Label}] += st.TestFrac*float64(s.Total) - float64(s.Test)
	}
}

// PlanSplitCarry is PlanSplit with each stratum's target raised by carry (nil: none).
func PlanSplitCarry(keys []Key, cfg Config, carry SplitCarry) ([]bool, SplitStats, error) {
	cfg, err := cfg.WithDefaults()
	if err != nil {
		return nil, SplitStats{}, err
	}
	// Strata, numbered in report order.
	strataIdx := map[StratumKey]int{}
	var strata []StratumKey
	for _, k := range keys {
		sk := StratumKey{k.Behavior, k.Label}
		if _, ok := strataIdx[sk]; !ok {
			strataIdx[sk] = len(strata)
			strata = append(strata, sk)
		}
	}
	slices.SortFunc(strata, StratumKey.Compare)
	for i, s := range strata {
		strataIdx[s] = i
	}

	// Groups with their per-stratum counts.
	groupIdx := map[uint64]int{}
	var groupKeys []uint64
	var counts [][]groupCount
	exGroup := make([]int32, len(keys))
	total := make([]int, len(strata))
	for i, k := range keys {
		g, ok := groupIdx[k.Group]
		if !ok {
			g = len(groupKeys)
			groupIdx[k.Group] = g
			groupKeys = append(groupKeys, k.Group)
			counts = append(counts, nil)
		}
		exGroup[i] = int32(g)
		s := strataIdx[StratumKey{k.Behavior, k.Label}]
		total[s]++
		j := slices.IndexFunc(counts[g], func(c groupCount) bool { return c.stratum == s })
		if j < 0 {
			counts[g] = append(counts[g], groupCount{s, 1})
		} else {
			counts[g][j].n++
		}
	}

	groupTest := make([]bool, len(groupKeys))
	testCount := make([]int, len(strata))
	if cfg.TestFrac > 0 {
		order := make([]int, len(groupKeys))
		for g := range order {
			order[g] = g
		}
		sortKey := func(g int) uint64 { return seededKey(cfg.Seed, saltSplit, groupKeys[g]) }
		slices.SortFunc(order, func(a, b int) int {
			if c := cmp.Compare(sortKey(a), sortKey(b)); c != 0 {
				return c
			}
			return cmp.Compare(groupKeys[a], groupKeys[b])
		})
		target := make([]float64, len(strata))
		for s, sk := range strata {
			target[s] = float64(cfg.TestFrac*float64(total[s])) + carry[sk]
		}
		// Change of Σ ((t−T)/n)² when t moves by ±c: c·(c ± 2(t−T))/n². The explicit float64
		// conversions forbid fused multiply-adds, so every platform decides alike.
		delta := func(g int, sign float64) float64 {
			var d float64
			for _, c := range counts[g] {
				n := float64(total[c.stratum])
				dev := float64(testCount[c.stratum]) - target[c.stratum]
				d += float64(float64(c.n)*float64(float64(c.n)+float64(sign*2*dev))) / float64(n*n)
			}
			return d
		}
		move := func(g int, sign int) {
			groupTest[g] = sign > 0
			for _, c := range counts[g] {
				testCount[c.stratum] += sign * c.n
			}
		}
		// A greedy pass adds groups that help; later passes also take back groups whose
		// removal helps, until nothing changes (a local optimum; a few passes suffice).
		for _, g := range order {
			if delta(g, 1) < 0 {
				move(g, 1)
			}
		}
		for pass, changed := 0, true; changed && pass < 8; pass++ {
			changed = false
			for _, g := range order {
				sign := 1
				if groupTest[g] {
					sign = -1
				}
				if delta(g, float64(sign)) < 0 {
					move(g, sign)
					changed = true
				}
			}
		}
	}

	inTest := make([]bool, len(keys))
	stats := SplitStats{TestFrac: cfg.TestFrac, Groups: len(groupKeys)}
	for i := range keys {
		inTest[i] = groupTest[exGroup[i]]
		if inTest[i] {
			stats.Test++
		} else {
			stats.Train++
		}
	}
	for _, t := range groupTest {
		if t {
			stats.TestGroups++
		}
	}
	for s, sk := range strata {
		st := Stratum{Behavior: sk.Behavior, Label: sk.Label, Total: total[s], Test: testCount[s]}
		if st.Total > 0 {
			st.TestFrac = float64(st.Test) / float64(st.Total)
		}
		stats.Strata = append(stats.Strata, st)
	}
	return inTest, stats, nil
}
