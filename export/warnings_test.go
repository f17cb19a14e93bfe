package export

import (
	"slices"
	"strings"
	"testing"
)

// TestComputeWarnings: each warning from the counts that call for it, and nothing from a
// balanced run. (TestPrepWarnings in cmd/ktoloader runs them on the real data sets.)
func TestComputeWarnings(t *testing.T) {
	balanced := func() *Manifest {
		m := NewManifest()
		m.Config.MaxLen, m.Config.Truncate, m.Config.MaxLineBytes = 2048, "reject", 1<<26
		m.Counts.Read, m.Counts.Written = 100, 100
		m.Counts.Splits["train"] = SplitCounts{Examples: 100, Desirable: 50, Undesirable: 50}
		m.KTO.BatchSize = 8
		m.KTO.Splits["train"] = BatchInfo{Examples: 100, Desirable: 50, Undesirable: 50, Batches: 13, NoDesirable: 1, NoUndesirable: 2}
		return m
	}
	codes := func(ws []Warning) []string {
		var out []string
		for _, w := range ws {
			out = append(out, w.Code)
		}
		return out
	}
	if ws := ComputeWarnings(balanced()); len(ws) != 0 {
		t.Errorf("balanced run: %v", ws)
	}

	m := balanced()
	m.Counts.Read, m.Counts.Rejected = 130, 30 // 23% rejected
	m.Counts.Reasons = map[string]int64{"too_long": 20, "invalid_json": 4, "missing_label": 4, "line_too_long": 1, "drop_last": 1}
	ws := ComputeWarnings(m)
	if !slices.Equal(codes(ws), []string{WarnRejected}) {
		t.Fatalf("warnings %v", ws)
	}
	msg := ws[0].Message
	for _, want := range []string{"30 of 130 rows (23.1%)", "too_long 20 (a larger --max-len (now 2048) keeps them; --truncate keep-end",
		"invalid_json 4; missing_label 4 (--missing-label", "2 other reasons"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	m.Config.Truncate = "keep-end"
	if msg := ComputeWarnings(m)[0].Message; strings.Contains(msg, "--truncate keep-end keeps") {
		t.Errorf("already keep-end, still suggested: %q", msg)
	}

	m = balanced()
	m.Counts.Read, m.Counts.Written = 0, 0
	m.Counts.Splits, m.KTO.Splits = map[string]SplitCounts{}, map[string]BatchInfo{}
	if ws := ComputeWarnings(m); !slices.Equal(codes(ws), []string{WarnNoRows}) || !strings.Contains(ws[0].Message, "no rows") {
		t.Errorf("empty input: %v", ws)
	}

	m = balanced()
	m.Counts.Splits["train"] = SplitCounts{Examples: 100, Undesirable: 100}
	m.KTO.Splits["train"] = BatchInfo{Examples: 100, Undesirable: 100, Batches: 13, NoDesirable: 13}
	if ws := ComputeWarnings(m); !slices.Equal(codes(ws), []string{WarnSingleLabel}) || !strings.Contains(ws[0].Message, "every example is undesirable (100)") {
		t.Errorf("single label (the batch warning would only repeat it): %v", ws)
	}

	m = balanced()
	m.Counts.Splits["test"] = SplitCounts{Examples: 10, Desirable: 9, Undesirable: 1}
	m.KTO.Splits["test"] = BatchInfo{Examples: 10, Desirable: 9, Undesirable: 1, Batches: 2, NoUndesirable: 1} // half: not most
	m.KTO.Splits["train"] = BatchInfo{Examples: 100, Desirable: 90, Undesirable: 10, Batches: 13, NoUndesirable: 7}
	if ws := ComputeWarnings(m); !slices.Equal(codes(ws), []string{WarnBatchesMissLabel}) || !strings.HasPrefix(ws[0].Message, "train: 7 of 13 KTO batches hold no undesirable") {
		t.Errorf("unbalanced batches: %v", ws)
	}
}
