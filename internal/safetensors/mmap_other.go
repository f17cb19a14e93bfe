//go:build !unix

package safetensors

import (
	"io"
	"os"
)

// mapFile reads the whole file where there is no syscall.Mmap: correct, but the weights
// then live on the Go heap.
func mapFile(f *os.File, size int64) ([]byte, func([]byte) error, error) {
	data := make([]byte, size)
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, size), data); err != nil {
		return nil, nil, err
	}
	return data, func([]byte) error { return nil }, nil
}
