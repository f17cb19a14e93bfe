//go:build !amd64

package lmhead

const useAVX2 = false

func gemm6x16Asm(kc int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	gemm6x16Go(kc, a, lda, b, ldb, c, ldc)
}

// expShiftAsm does none of the values: expShift's Go loop does them all.
func expShiftAsm(dst, src []float32, shift, scale float32) float32 { return 0 }
