package safetensors

import (
	"io"
	"path/filepath"
	"testing"
)

// BenchmarkLoad256MiB opens a file holding one 256 MiB BF16 tensor and copies its data
// out, as a device upload from the mapping would (go-xla's BufferFromHost copies once).
// The file is in the page cache after the first iteration, so this measures the mapping
// and the copy, not the disk. Reported: MB/s of tensor data.
//
//	go test -run XXX -bench Load256MiB -benchtime 5x ./internal/safetensors
func BenchmarkLoad256MiB(b *testing.B) {
	const rows, cols = 16384, 8192 // 128 Mi BF16 elements = 256 MiB
	const size = rows * cols * 2
	p := filepath.Join(b.TempDir(), "model.safetensors")
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i * 7)
	}
	err := WriteFile(p, []Tensor{{Name: "lm_head.weight", DType: BF16, Shape: []int{rows, cols}, Write: func(w io.Writer) error {
		for n := 0; n < size; n += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return err
			}
		}
		return nil
	}}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	dst := make([]byte, size)
	b.ResetTimer()
	for b.Loop() {
		f, err := Open(p)
		if err != nil {
			b.Fatal(err)
		}
		d, err := f.Data("lm_head.weight")
		if err != nil {
			b.Fatal(err)
		}
		copy(dst, d)
		f.Close()
	}
	b.ReportMetric(float64(size)*float64(b.N)/1e6/b.Elapsed().Seconds(), "MB/s")
	if dst[size-1] != chunk[len(chunk)-1] {
		b.Fatal("wrong data")
	}
}
