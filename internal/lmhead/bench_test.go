package lmhead

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkHead: the tiny preset's head (vocab 32768, d 64) over 512 positions, forward and
// backward with the head's gradient; GFLOP/s counts the 8 products of 2·n·vocab·d each pass
// makes (logits ×3, input gradient, head gradient).
func BenchmarkHead(b *testing.B) {
	n, vocab, d := 512, 32768, 64
	x, w, labels, g := randomCase(rand.New(rand.NewPCG(7, 8)), n, vocab, d)
	h, _ := NewHead(w, vocab, d)
	logp, lse := make([]float32, n), make([]float32, n)
	dx, dw := make([]float32, n*d), make([]float32, vocab*d)
	b.ResetTimer()
	for range b.N {
		h.LogProbs(x, labels, logp, lse)
		h.Backward(x, labels, lse, g, dx, dw)
	}
	flops := 5 * 2 * float64(n) * float64(vocab) * float64(d)
	b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "positions/s")
}
