package pipeline

import (
	"math"

	"github.com/ktoloader/ktoloader/export"
)

// lenHist counts example lengths by value, so that the manifest's length statistics
// (export.Dist: min, mean, nearest-rank p50 and p95, max) cost memory in the longest length,
// not in the number of examples. Lengths are bounded by --max-len once truncated.
type lenHist struct {
	n     []int64 // n[l]: examples of length l
	count int64
	sum   float64
}

func (h *lenHist) add(l int) {
	if l >= len(h.n) {
		h.n = append(h.n, make([]int64, l+1-len(h.n))...)
	}
	h.n[l]++
	h.count++
	h.sum += float64(l)
}

// dist is export.Summarize of the lengths added, computed from the counts.
func (h *lenHist) dist() export.Dist {
	if h.count == 0 {
		return export.Dist{}
	}
	// rank returns the value at 0-based index i of the sorted lengths.
	rank := func(i int64) int64 {
		var seen int64
		for l, c := range h.n {
			seen += c
			if seen > i {
				return int64(l)
			}
		}
		return int64(len(h.n) - 1)
	}
	at := func(p float64) int64 { // nearest rank, as export.Summarize
		return rank(max(int64(math.Ceil(p*float64(h.count)))-1, 0))
	}
	return export.Dist{
		Count: h.count,
		Min:   rank(0),
		Mean:  math.Round(h.sum/float64(h.count)*1000) / 1000,
		P50:   at(0.50),
		P95:   at(0.95),
		Max:   rank(h.count - 1),
	}
}

// tokenHists are the three length distributions of the manifest's tokens section.
type tokenHists struct{ prompt, completion, total lenHist }

func (t *tokenHists) add(p, c int) {
	t.prompt.add(p)
	t.completion.add(c)
	t.total.add(p + c)
}

func (t *tokenHists) stats() export.TokenStats {
	return export.TokenStats{Prompt: t.prompt.dist(), Completion: t.completion.dist(), Total: t.total.dist()}
}
