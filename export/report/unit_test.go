package report

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// TestSeparation checks the counting AUC and best-rule accuracy against brute force on
// random data with many ties, and the rule it names against the accuracy it claims.
func TestSeparation(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for trial := 0; trial < 200; trial++ {
		n := 1 + rng.IntN(60)
		span := 1 + rng.IntN(8)
		bias := rng.Float64()
		f := newFeature("x", "test", false)
		var scores []float64
		var labels []bool
		for i := 0; i < n; i++ {
			v := int64(rng.IntN(span))
			label := rng.Float64() < bias+0.1*float64(v)
			f.add(v, label, 0)
			scores = append(scores, float64(v))
			labels = append(labels, label)
		}
		s := f.result(nil)
		both := slices.Contains(labels, true) && slices.Contains(labels, false)
		if both {
			if want := bruteAUC(scores, labels); math.Abs(s.AUC-want) > 1e-12 {
				t.Fatalf("trial %d: AUC %v, brute force %v", trial, s.AUC, want)
			}
		} else if s.AUC != 0.5 || s.Level != LevelNone {
			t.Fatalf("trial %d: one label: AUC %v level %q", trial, s.AUC, s.Level)
		}
		if want := bruteAccuracy(scores, labels); math.Abs(s.Accuracy-want) > 1e-12 {
			t.Fatalf("trial %d: accuracy %v, brute force %v", trial, s.Accuracy, want)
		}
		// The rule as printed must score the accuracy claimed.
		var thr float64
		var to string
		if _, err := fmt.Sscanf(s.Rule, "≥ %g → %s", &thr, &to); err == nil {
			right := 0
			for i, v := range scores {
				if (v >= thr) == (to == "desirable") == labels[i] {
					right++
				}
			}
			if got := float64(right) / float64(n); math.Abs(got-s.Accuracy) > 1e-12 {
				t.Fatalf("trial %d: rule %q scores %v, claimed %v", trial, s.Rule, got, s.Accuracy)
			}
		} else if !strings.HasPrefix(s.Rule, "always ") {
			t.Fatalf("trial %d: rule %q", trial, s.Rule)
		}
	}
}

func TestBinaryFeature(t *testing.T) {
	// Two behaviors where the feature means opposite things: overall it says little, per
	// behavior it decides the label.
	f := newFeature("calls", "test", true)
	for i := 0; i < 10; i++ {
		f.addBool(true, true, 0)
		f.addBool(false, false, 0)
		f.addBool(true, false, 1)
		f.addBool(false, true, 1)
	}
	s := f.result([]string{"a", "b"})
	if s.AUC != 0.5 || s.Accuracy != 0.5 {
		t.Errorf("overall AUC %v accuracy %v, want 0.5 and 0.5", s.AUC, s.Accuracy)
	}
	if s.WithinBehavior == nil || *s.WithinBehavior != 1 {
		t.Errorf("within behavior %v, want 1", s.WithinBehavior)
	}
	if len(s.ByBehavior) != 2 || s.ByBehavior[0].Behavior != "a" || s.ByBehavior[0].Yes.Desirable != 10 || s.ByBehavior[1].Yes.Undesirable != 10 {
		t.Errorf("by behavior %+v", s.ByBehavior)
	}
	if got := binaryAUC(*s.Yes, *s.Yes); got != 0.5 {
		t.Errorf("binaryAUC of a constant: %v", got)
	}
}

func TestParseAnswer(t *testing.T) {
	for _, c := range []struct {
		name       string
		completion string
		calls      []string
		keys       [][]string
		text       bool
		parsed     bool
	}{
		{"text", " Sure, done.</s>", nil, nil, false, false},
		{"calls", `[TOOL_CALLS] [{"name": "a", "arguments": {"x": 1, "y": {"z": 2}}, "id": "abcdefghi"}, {"name": "b", "arguments": {}, "id": "bcdefghij"}]</s>`,
			[]string{"a", "b"}, [][]string{{"x", "y"}, nil}, false, true},
		{"text and calls", ` Let me look.[TOOL_CALLS] [{"name": "a", "arguments": {"q": "[TOOL_CALLS]"}, "id": "abcdefghi"}]</s>`,
			[]string{"a"}, [][]string{{"q"}}, true, true},
		{"literal mark in text", ` I will write [TOOL_CALLS] here [TOOL_CALLS] [{"name": "a", "arguments": {"k": 1}, "id": "abcdefghi"}]</s>`,
			[]string{"a"}, [][]string{{"k"}}, true, true},
		{"not a list", " [TOOL_CALLS] is a token</s>", nil, nil, false, false},
		{"arguments not an object", `[TOOL_CALLS] [{"name": "a", "arguments": [1], "id": "abcdefghi"}]</s>`, []string{"a"}, [][]string{nil}, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := parseAnswer(c.completion)
			if a.parsed != c.parsed || a.toolText != c.text || len(a.calls) != len(c.calls) {
				t.Fatalf("got %+v", a)
			}
			for i, call := range a.calls {
				if call.name != c.calls[i] || !slices.Equal(call.keys, c.keys[i]) {
					t.Errorf("call %d: %+v, want %s %v", i, call, c.calls[i], c.keys[i])
				}
			}
		})
	}
}

func TestSchemas(t *testing.T) {
	nexus := `{"t1": {"tool_name": "t1", "parameters": [{"name": "a", "optional": false}, {"name": "b", "optional": true}], "required_params": ["a"]}}`
	openai := `[{"type": "function", "function": {"name": "t1", "parameters": {"type": "object", "properties": {"a": {}, "b": {}}, "required": ["a"]}}}]`
	for _, src := range []string{nexus, openai} {
		s, err := ParseSchemas([]byte(src))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			call call
			want []problemKey
		}{
			{call{"t1", []string{"a", "b"}, true}, nil},
			{call{"t1", []string{"b", "c"}, true}, []problemKey{{"t1", "a", ProblemMissingParam}, {"t1", "c", ProblemUnknownParam}}},
			{call{"t2", []string{"a"}, true}, []problemKey{{"t2", "", ProblemUnknownTool}}},
			{call{"t1", nil, false}, []problemKey{{"t1", "", ProblemBadArguments}}},
		} {
			if got := s.check(c.call); !slices.Equal(got, c.want) {
				t.Errorf("%.10s… %+v: %v, want %v", src, c.call, got, c.want)
			}
		}
	}
	for _, bad := range []string{``, `{}`, `[]`, `{"t": {"parameters": [{}]}}`, `[{"function": {}}]`, `"x"`} {
		if _, err := ParseSchemas([]byte(bad)); !errors.Is(err, ErrSchemaFile) {
			t.Errorf("%q: %v, want ErrSchemaFile", bad, err)
		}
	}
}

func TestNormalize(t *testing.T) {
	for in, want := range map[string]string{
		"Hello   World":                      "hello world",
		"session_1732396000000_a1b5c2d6e ok": "session_0_0 ok",
		"  Move  notes/2024 to Archive!\n":   "move notes/0 to archive!",
		"größe 12kg":                         "größe 0",
		"a , b":                              "a , b",
	} {
		if got := normalize(in); got != want {
			t.Errorf("normalize(%q) = %q, want %q", in, got, want)
		}
	}
}

// exactJaccard is the Jaccard similarity of two texts' 5-gram sets.
func exactJaccard(a, b string) float64 {
	set := func(s string) map[string]bool {
		r := []rune(s)
		out := map[string]bool{}
		if len(r) < shingleRunes {
			out[s] = true
			return out
		}
		for i := 0; i+shingleRunes <= len(r); i++ {
			out[string(r[i:i+shingleRunes])] = true
		}
		return out
	}
	sa, sb := set(a), set(b)
	inter := 0
	for k := range sa {
		if sb[k] {
			inter++
		}
	}
	return float64(inter) / float64(len(sa)+len(sb)-inter)
}

// TestNearDuplicates checks the MinHash estimate against exact Jaccard similarity, and the
// LSH index: every pair well above the threshold is found, none well below it is.
func TestNearDuplicates(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	words := strings.Fields("move the note to archive folder create a new file search my vault for meeting notes " +
		"about budget project plan weekly review delete old drafts rename the workspace open settings")
	sentence := func(n int) string {
		var w []string
		for i := 0; i < n; i++ {
			w = append(w, words[rng.IntN(len(words))])
		}
		return strings.Join(w, " ")
	}
	var test, train []string
	for i := 0; i < 60; i++ {
		test = append(test, sentence(12+rng.IntN(20)))
	}
	for i := 0; i < 200; i++ {
		base := test[rng.IntN(len(test))]
		switch i % 4 {
		case 0: // a copy with one word changed
			w := strings.Fields(base)
			w[rng.IntN(len(w))] = "zebra"
			train = append(train, strings.Join(w, " "))
		case 1: // the same after normalization
			train = append(train, strings.ToUpper(base)+"  ")
		default: // unrelated
			train = append(train, sentence(12+rng.IntN(20)))
		}
	}
	x := newLSHIndex()
	for i, s := range test {
		x.add(int32(i), normalize(s))
	}
	var maxErr float64
	for _, s := range train {
		found := map[int32]float64{}
		x.query(normalize(s), func(i int32, sim float64, _ bool) { found[i] = sim })
		for i, ts := range test {
			j := exactJaccard(normalize(ts), normalize(s))
			sim, ok := found[int32(i)]
			if j >= 0.95 && !ok {
				t.Errorf("Jaccard %.2f pair not found:\n%q\n%q", j, ts, s)
			}
			if ok {
				if j < 0.6 {
					t.Errorf("Jaccard %.2f pair reported at %.2f", j, sim)
				}
				maxErr = math.Max(maxErr, math.Abs(sim-j))
			}
		}
	}
	if maxErr > 0.2 {
		t.Errorf("estimates off by up to %.2f", maxErr)
	}
	var a, b signature
	minhash("same text", &a)
	minhash("same text", &b)
	if similarity(&a, &b) != 1 {
		t.Error("equal texts are not similar 1")
	}
	minhash("abc", &a) // shorter than a shingle: one shingle, every bucket filled
	for _, v := range a {
		if v == ^uint32(0) {
			t.Fatal("an empty bucket after densification")
		}
	}
}

func TestHistAcc(t *testing.T) {
	h := newHistAcc(405, 900)
	if h.width != 10 || len(h.counts[0]) != 41 || !h.open {
		t.Fatalf("width %v bins %d open %v", h.width, len(h.counts[0]), h.open)
	}
	for _, v := range []int64{0, 9, 10, 405, 899} {
		h.add(v, true)
	}
	c := h.counts[1]
	if c[0] != 2 || c[1] != 1 || c[40] != 2 {
		t.Errorf("counts %v", c)
	}
	if w := niceWidth(0.3, 1); w != 1 {
		t.Errorf("niceWidth(0.3, 1) = %v", w)
	}
}
