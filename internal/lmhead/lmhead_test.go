package lmhead

import (
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
)

// reference is the head in float64 from its definition: logits x·Wᵀ, log-softmax, and the
// gradients of Σ g·logp (softmax minus one-hot, times g).
func reference(x, w []float32, labels []int32, g []float32, vocab, d int) (logp, dx, dw []float64) {
	n := len(labels)
	logp, dx, dw = make([]float64, n), make([]float64, n*d), make([]float64, vocab*d)
	for i := range n {
		logits := make([]float64, vocab)
		top := math.Inf(-1)
		for v := range vocab {
			for k := range d {
				logits[v] += float64(x[i*d+k]) * float64(w[v*d+k])
			}
			top = math.Max(top, logits[v])
		}
		var s float64
		for _, l := range logits {
			s += math.Exp(l - top)
		}
		lse := top + math.Log(s)
		logp[i] = logits[labels[i]] - lse
		for v := range vocab {
			coef := -math.Exp(logits[v]-lse) * float64(g[i])
			if v == int(labels[i]) {
				coef += float64(g[i])
			}
			for k := range d {
				dx[i*d+k] += coef * float64(w[v*d+k])
				dw[v*d+k] += coef * float64(x[i*d+k])
			}
		}
	}
	return logp, dx, dw
}

func randomCase(r *rand.Rand, n, vocab, d int) (x, w []float32, labels []int32, g []float32) {
	x, w, labels, g = make([]float32, n*d), make([]float32, vocab*d), make([]int32, n), make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	for i := range w {
		w[i] = float32(r.NormFloat64() * 0.3)
	}
	for i := range labels {
		labels[i] = int32(r.IntN(vocab))
		g[i] = float32(r.NormFloat64())
	}
	return
}

func maxErr(got []float32, want []float64) (worst float64, scale float64) {
	for i := range got {
		worst = math.Max(worst, math.Abs(float64(got[i])-want[i]))
		scale = math.Max(scale, math.Abs(want[i]))
	}
	return worst, scale
}

func TestHeadMatchesFloat64Reference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, c := range []struct{ n, vocab, d int }{
		{1, 16, 16}, {7, 250, 16}, {53, 1000, 64}, {100, 4817, 32}, {49, 241, 48},
	} {
		x, w, labels, g := randomCase(r, c.n, c.vocab, c.d)
		h, err := NewHead(w, c.vocab, c.d)
		if err != nil {
			t.Fatal(err)
		}
		logp, lse := make([]float32, c.n), make([]float32, c.n)
		h.LogProbs(x, labels, logp, lse)
		dx, dw := make([]float32, c.n*c.d), make([]float32, c.vocab*c.d)
		h.Backward(x, labels, lse, g, dx, dw)
		wl, wdx, wdw := reference(x, w, labels, g, c.vocab, c.d)
		for name, pair := range map[string]struct {
			got  []float32
			want []float64
		}{"logp": {logp, wl}, "dx": {dx, wdx}, "dW": {dw, wdw}} {
			worst, scale := maxErr(pair.got, pair.want)
			if worst > 2e-5*math.Max(1, scale) {
				t.Errorf("n %d vocab %d d %d: %s off the float64 reference by %g (largest value %g)", c.n, c.vocab, c.d, name, worst, scale)
			}
		}
		// Without dW the input gradient is the same.
		dx2 := make([]float32, c.n*c.d)
		h.Backward(x, labels, lse, g, dx2, nil)
		if !slices.Equal(dx, dx2) {
			t.Errorf("n %d vocab %d d %d: dx changes when dW is not asked for", c.n, c.vocab, c.d)
		}
	}
}

// The results must not depend on the number of goroutines (the trainer is deterministic).
func TestHeadIndependentOfGOMAXPROCS(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	n, vocab, d := 130, 3000, 64
	x, w, labels, g := randomCase(r, n, vocab, d)
	run := func(procs int) (logp, dx, dw []float32) {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		h, _ := NewHead(w, vocab, d)
		logp, lse := make([]float32, n), make([]float32, n)
		h.LogProbs(x, labels, logp, lse)
		dx, dw = make([]float32, n*d), make([]float32, vocab*d)
		h.Backward(x, labels, lse, g, dx, dw)
		return
	}
	l1, x1, w1 := run(1)
	l4, x4, w4 := run(4)
	if !slices.Equal(l1, l4) || !slices.Equal(x1, x4) || !slices.Equal(w1, w4) {
		t.Fatal("the head's results differ between GOMAXPROCS 1 and 4")
	}
}

func TestKernelAsmMatchesGo(t *testing.T) {
	if !useAVX2 {
		t.Skip("no AVX2/FMA on this CPU: only the Go kernel runs")
	}
	r := rand.New(rand.NewPCG(5, 6))
	for _, kc := range []int{1, 2, 15, 64, 241} {
		lda, ldb, ldc := kc+3, 21, 19
		a, b := make([]float32, 5*lda+kc), make([]float32, (kc-1)*ldb+16)
		for i := range a {
			a[i] = float32(r.NormFloat64())
		}
		for i := range b {
			b[i] = float32(r.NormFloat64())
		}
		c1, c2 := make([]float32, 5*ldc+16), make([]float32, 5*ldc+16)
		for i := range c1 {
			c1[i] = float32(i)
			c2[i] = float32(i)
		}
		gemm6x16Asm(kc, a, lda, b, ldb, c1, ldc)
		gemm6x16Go(kc, a, lda, b, ldb, c2, ldc)
		for i := range 6 {
			for j := range ldc {
				if j >= 16 && i < 5 {
					// between rows: untouched
					if c1[i*ldc+j] != float32(i*ldc+j) {
						t.Fatalf("kc %d: the kernel wrote outside its block at [%d, %d]", kc, i, j)
					}
					continue
				}
				if i == 5 && j >= 16 {
					continue
				}
				want := float64(c2[i*ldc+j])
				if d := math.Abs(float64(c1[i*ldc+j]) - want); d > 1e-4*math.Max(1, math.Abs(want)) {
					t.Fatalf("kc %d: [%d, %d] asm %v, Go %v", kc, i, j, c1[i*ldc+j], want)
				}
			}
		}
	}
}

func TestExpf(t *testing.T) {
	worst := 0.0
	for x := float32(-88); x <= 0; x += 0.00137 {
		want := math.Exp(float64(x))
		got := float64(expf(x))
		if x < -87.3 {
			continue // below float32's normal range expf gives 0
		}
		worst = math.Max(worst, math.Abs(got-want)/want)
	}
	if worst > 3e-7 {
		t.Fatalf("expf's relative error reaches %g", worst)
	}
	if expf(-100) != 0 || expf(0) != 1 {
		t.Fatalf("expf(-100) = %v, expf(0) = %v", expf(-100), expf(0))
	}
}

// expShift (the AVX2 lanes and the Go tail) against math.Exp, and its sum.
func TestExpShift(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, n := range []int{1, 7, 8, 29, 240} {
		src := make([]float32, n)
		for i := range src {
			src[i] = float32(-r.Float64() * 100)
		}
		src[0] = 3 // the shift itself: e^0
		dst := make([]float32, n)
		sum := expShift(dst, src, 3, 0.5)
		var want float64
		for i, x := range src {
			arg := float64(x - 3) // rounded to float32, as the kernels' shift
			e := 0.5 * math.Exp(arg)
			if arg < -87.3 {
				e = 0
			}
			want += e
			if math.Abs(float64(dst[i])-e) > 3e-7*e {
				t.Fatalf("n %d: expShift(%v) = %v, want %v", n, x, dst[i], e)
			}
		}
		if math.Abs(float64(sum)-want) > 1e-6*want {
			t.Fatalf("n %d: sum %v, want %v", n, sum, want)
		}
	}
}

func TestNewHeadRefusesBadShapes(t *testing.T) {
	if _, err := NewHead(make([]float32, 10*24), 10, 24); err == nil {
		t.Error("a width that is not a multiple of 16 was accepted")
	}
	if _, err := NewHead(make([]float32, 10), 10, 16); err == nil {
		t.Error("a weight of the wrong length was accepted")
	}
}
