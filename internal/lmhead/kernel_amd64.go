package lmhead

import (
	"math"

	"golang.org/x/sys/cpu"
)

// useAVX2 selects the assembly kernel: AVX2 and FMA (Haswell, 2013, and later).
var useAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

//go:noescape
func gemm6x16AVX2(kc int, a *float32, lda int, b *float32, ldb int, c *float32, ldc int)

func gemm6x16Asm(kc int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	gemm6x16AVX2(kc, &a[0], lda, &b[0], ldb, &c[0], ldc)
}

//go:noescape
func expShiftAVX2(dst, src *float32, n int, shift, scale float32, c *float32) (sum float32)

// expConsts are expShiftAVX2's constants (expf's), eight copies each: log2 e, ln 2 in two
// parts, the polynomial's six coefficients, 1, the lower clamp, and the exponent bias.
var expConsts = func() []float32 {
	vals := []float32{math.Log2E, 0.693359375, -2.12194440e-4, 1.9875691500e-4, 1.3981999507e-3,
		8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1, 1, -87.3, math.Float32frombits(127)}
	out := make([]float32, 0, 8*len(vals))
	for _, v := range vals {
		for range 8 {
			out = append(out, v)
		}
	}
	return out
}()

// expShiftAsm does the first len(src) rounded down to 8 values of expShift.
func expShiftAsm(dst, src []float32, shift, scale float32) float32 {
	n := len(src) &^ 7
	if n == 0 {
		return 0
	}
	return expShiftAVX2(&dst[0], &src[0], n, shift, scale, &expConsts[0])
}
