package report

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/ktoloader/ktoloader/export"
)

// Shortcut levels, by Strength (the better of AUC and 1−AUC). A feature at "strong" or above
// lets a model reach most of the label without reading the behavior the data is about.
const (
	LevelDecisive = "decisive" // strength ≥ 0.90
	LevelStrong   = "strong"   // ≥ 0.75
	LevelModerate = "moderate" // ≥ 0.65
	LevelWeak     = "weak"
	LevelNone     = "n/a" // only one label among the rows measured: nothing to predict
)

func levelOf(strength float64) string {
	switch {
	case strength >= 0.90:
		return LevelDecisive
	case strength >= 0.75:
		return LevelStrong
	case strength >= 0.65:
		return LevelModerate
	}
	return LevelWeak
}

// Shortcut is one feature and how well it alone predicts the label.
type Shortcut struct {
	Feature string `json:"feature"`
	// From says what the feature was computed from: "shards" (what the model is trained on),
	// "raw inputs" (matched to shard rows by source) or "tool schemas".
	From   string `json:"from"`
	Binary bool   `json:"binary"`
	Rows   int64  `json:"rows"` // rows measured (raw-input features: rows matched to an input row)
	// Rule is the best single-threshold rule, e.g. "yes → undesirable" or "≥ 212 → desirable",
	// and Accuracy its share of rows right. Baseline is the majority label's share: a rule is
	// only as good as its lead over it.
	Rule     string  `json:"rule"`
	Accuracy float64 `json:"accuracy"`
	Baseline float64 `json:"baseline"`
	// AUC is P(a desirable row scores higher than an undesirable one), ties counting half:
	// 0.5 is no signal, 1 or 0 a perfect split. Strength is max(AUC, 1−AUC).
	AUC      float64 `json:"auc"`
	Strength float64 `json:"strength"`
	Level    string  `json:"level"`
	// Binary features only: rows where the feature holds and where it does not, and the
	// accuracy of the best rule chosen per behavior (a model can tell behaviors apart from the
	// prompt, so a rule that flips between behaviors is still a shortcut).
	Yes            *export.LabelCounts `json:"yes,omitempty"`
	No             *export.LabelCounts `json:"no,omitempty"`
	WithinBehavior *float64            `json:"within_behavior_accuracy,omitempty"`
	ByBehavior     []BehaviorSplit     `json:"by_behavior,omitempty"`
	// Refines names the yes/no feature this count refines (tool calls in the answer refine
	// "answer calls a tool"); findings report it only when it predicts better.
	Refines string `json:"refines,omitempty"`
}

// BehaviorSplit is a binary feature within one behavior.
type BehaviorSplit struct {
	Behavior string             `json:"behavior"`
	Yes      export.LabelCounts `json:"yes"`
	No       export.LabelCounts `json:"no"`
	Accuracy float64            `json:"accuracy"` // of the better direction within the behavior
}

// feature accumulates one feature's values per label as counts per distinct value, which
// is exact and small: lengths are bounded by --max-len, and binary features have two values.
type feature struct {
	name, from string
	binary     bool
	refines    string
	counts     map[int64]*[2]int64
	byBehavior map[int32]*[2][2]int64 // binary: behavior → [value][label]
}

func newFeature(name, from string, binary bool) *feature {
	f := &feature{name: name, from: from, binary: binary, counts: map[int64]*[2]int64{}}
	if binary {
		f.byBehavior = map[int32]*[2][2]int64{}
	}
	return f
}

func li(label bool) int {
	if label {
		return 1
	}
	return 0
}

func (f *feature) add(v int64, label bool, behavior int32) {
	c := f.counts[v]
	if c == nil {
		c = new([2]int64)
		f.counts[v] = c
	}
	c[li(label)]++
	if f.binary {
		b := f.byBehavior[behavior]
		if b == nil {
			b = new([2][2]int64)
			f.byBehavior[behavior] = b
		}
		b[min(v, 1)][li(label)]++
	}
}

func (f *feature) addBool(v, label bool, behavior int32) {
	var x int64
	if v {
		x = 1
	}
	f.add(x, label, behavior)
}

// valueCount is one distinct value with its rows per label (index 0 undesirable, 1 desirable).
type valueCount struct {
	v int64
	n [2]int64
}

// separation computes, from rows counted per distinct value, the AUC (Mann–Whitney: each
// desirable row against each undesirable one, ties half) and the best rule "x ≥ t → label"
// or "x ≥ t → other label" (t = +∞ predicts one label for all: the baseline).
func separation(vals []valueCount) (auc float64, acc float64, thr int64, aboveLabel bool, total [2]int64) {
	slices.SortFunc(vals, func(a, b valueCount) int { return cmp.Compare(a.v, b.v) })
	for _, vc := range vals {
		total[0] += vc.n[0]
		total[1] += vc.n[1]
	}
	n := total[0] + total[1]
	if n == 0 {
		return 0.5, 0, 0, true, total
	}
	// AUC: sum over values of desirable(v) × (undesirable below v + ½ undesirable at v).
	var below, wins float64
	for _, vc := range vals {
		wins += float64(vc.n[1]) * (below + 0.5*float64(vc.n[0]))
		below += float64(vc.n[0])
	}
	auc = 0.5
	if total[0] > 0 && total[1] > 0 {
		auc = wins / (float64(total[0]) * float64(total[1]))
	}
	// Baseline: predict the majority label everywhere (threshold above every value).
	best := max(total[0], total[1])
	thr, aboveLabel = math.MaxInt64, total[1] >= total[0]
	var lo [2]int64 // rows with value < t
	for _, vc := range vals {
		t := vc.v
		hi := [2]int64{total[0] - lo[0], total[1] - lo[1]}
		if c := hi[1] + lo[0]; c > best { // ≥ t → desirable
			best, thr, aboveLabel = c, t, true
		}
		if c := hi[0] + lo[1]; c > best { // ≥ t → undesirable
			best, thr, aboveLabel = c, t, false
		}
		lo[0] += vc.n[0]
		lo[1] += vc.n[1]
	}
	return auc, float64(best) / float64(n), thr, aboveLabel, total
}

func labelWord(desirable bool) string {
	if desirable {
		return "desirable"
	}
	return "undesirable"
}

// result summarizes the feature; behaviors names the behavior ids.
func (f *feature) result(behaviors []string) Shortcut {
	vals := make([]valueCount, 0, len(f.counts))
	for v, c := range f.counts {
		vals = append(vals, valueCount{v, *c})
	}
	auc, acc, thr, above, total := separation(vals)
	s := Shortcut{Feature: f.name, From: f.from, Binary: f.binary, Rows: total[0] + total[1],
		Accuracy: acc, AUC: auc, Strength: math.Max(auc, 1-auc), Refines: f.refines}
	if s.Rows > 0 {
		s.Baseline = float64(max(total[0], total[1])) / float64(s.Rows)
	}
	s.Level = levelOf(s.Strength)
	if total[0] == 0 || total[1] == 0 || len(vals) < 2 {
		s.Level = LevelNone // one label, or one value: nothing to learn from it
	}
	switch {
	case thr == math.MaxInt64:
		s.Rule = "always " + labelWord(above)
	case f.binary:
		s.Rule = "yes → " + labelWord(above)
	default:
		s.Rule = fmt.Sprintf("≥ %d → %s", thr, labelWord(above))
	}
	if !f.binary {
		return s
	}
	var yes, no export.LabelCounts
	for v, c := range f.counts {
		t := &no
		if v != 0 {
			t = &yes
		}
		t.Undesirable += c[0]
		t.Desirable += c[1]
	}
	s.Yes, s.No = &yes, &no
	var right, all int64
	for b, t := range f.byBehavior {
		// The better direction within the behavior: yes→desirable or yes→undesirable.
		c := max(t[1][1]+t[0][0], t[1][0]+t[0][1])
		n := t[0][0] + t[0][1] + t[1][0] + t[1][1]
		right += c
		all += n
		name := ""
		if int(b) < len(behaviors) {
			name = behaviors[b]
		}
		s.ByBehavior = append(s.ByBehavior, BehaviorSplit{Behavior: name,
			Yes:      export.LabelCounts{Desirable: t[1][1], Undesirable: t[1][0]},
			No:       export.LabelCounts{Desirable: t[0][1], Undesirable: t[0][0]},
			Accuracy: ratio(c, n)})
	}
	slices.SortFunc(s.ByBehavior, func(a, b BehaviorSplit) int { return cmp.Compare(a.Behavior, b.Behavior) })
	if all > 0 {
		w := float64(right) / float64(all)
		s.WithinBehavior = &w
	}
	return s
}

func ratio(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// binaryAUC is the AUC of a yes/no feature: (TPR + TNR)/2 for "yes → desirable", the
// Mann–Whitney statistic with the two values.
func binaryAUC(yes, all export.LabelCounts) float64 {
	if all.Desirable == 0 || all.Undesirable == 0 {
		return 0.5
	}
	tpr := float64(yes.Desirable) / float64(all.Desirable)
	fpr := float64(yes.Undesirable) / float64(all.Undesirable)
	return (tpr + 1 - fpr) / 2
}
