package lmhead

import "golang.org/x/sys/cpu"

// useAVX2 selects the assembly kernel: AVX2 and FMA (Haswell, 2013, and later).
var useAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

//go:noescape
func gemm6x16AVX2(kc int, a *float32, lda int, b *float32, ldb int, c *float32, ldc int)

func gemm6x16Asm(kc int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	gemm6x16AVX2(kc, &a[0], lda, &b[0], ldb, &c[0], ldc)
}
