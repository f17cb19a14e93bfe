package lmhead

import (
	"fmt"
	"math"
)

// The micro-kernel: C[6×16] += A[6×kc]·B[kc×16], with A's row i at a[i·lda:], B's row k at
// b[k·ldb:] (16 contiguous values) and C's row i at c[i·ldc:] (16 contiguous values). Every
// product of the head is written as blocks of it: the logits (A = positions, B = the packed
// head), the input gradient (A = softmax weights, B = head rows) and the head gradient
// (A = transposed softmax weights, B = positions).

// gemm6x16 checks the operands' extents once (the assembly reads without bounds checks) and
// runs the AVX2 kernel where the CPU has it, else the Go one.
func gemm6x16(kc int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	if kc <= 0 {
		return
	}
	if len(a) < 5*lda+kc || len(b) < (kc-1)*ldb+16 || len(c) < 5*ldc+16 || lda < kc || ldb < 16 || ldc < 16 {
		panic(fmt.Sprintf("lmhead: gemm6x16 operands out of range: kc %d, a %d/%d, b %d/%d, c %d/%d",
			kc, len(a), lda, len(b), ldb, len(c), ldc))
	}
	if useAVX2 {
		gemm6x16Asm(kc, a, lda, b, ldb, c, ldc)
		return
	}
	gemm6x16Go(kc, a, lda, b, ldb, c, ldc)
}

// gemm6x16Go is the portable kernel (and the assembly's reference in the tests).
func gemm6x16Go(kc int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	var acc [6][16]float32
	for k := range kc {
		br := b[k*ldb : k*ldb+16]
		for i := range 6 {
			av := a[i*lda+k]
			row := &acc[i]
			for j := range 16 {
				row[j] += av * br[j]
			}
		}
	}
	for i := range 6 {
		cr := c[i*ldc : i*ldc+16]
		for j := range 16 {
			cr[j] += acc[i][j]
		}
	}
}

// expShift sets dst[i] = scale·e^(src[i]−shift) (src[i] ≤ shift) and returns their sum;
// dst may be src. The AVX2 kernel does eight at a time, expf the rest.
func expShift(dst, src []float32, shift, scale float32) float32 {
	dst = dst[:len(src)]
	var sum float32
	done := 0
	if useAVX2 {
		sum = expShiftAsm(dst, src, shift, scale)
		done = len(src) &^ 7
	}
	for i := done; i < len(src); i++ {
		dst[i] = scale * expf(src[i]-shift)
		sum += dst[i]
	}
	return sum
}

// expf is e^x in float32 for x ≤ 0 (the log-softmax's shifted logits), Cephes' expf: x =
// n·ln2 + r with |r| ≤ ln2/2, a degree-6 polynomial for e^r and 2^n from the exponent bits.
// Relative error ≤ 2 ulp; below −87.3 (e^x under float32's normal range) it is 0.
func expf(x float32) float32 {
	if x < -87.3 {
		return 0
	}
	t := x * math.Log2E
	if t < 0 {
		t -= 0.5
	} else {
		t += 0.5
	}
	n := float32(int32(t))
	r := x - n*0.693359375 - n*-2.12194440e-4
	p := ((((1.9875691500e-4*r+1.3981999507e-3)*r+8.3334519073e-3)*r+4.1665795894e-2)*r+1.6666665459e-1)*r + 5.0000001201e-1
	p = p*r*r + r + 1
	return p * math.Float32frombits(uint32(int32(n)+127)<<23)
}
