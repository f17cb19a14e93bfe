package export

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// FileSHA256 streams what sha256.Sum256 gives over the whole file, across io.Copy's buffer size.
func TestFileSHA256(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []int{0, 1, 32<<10 - 1, 32 << 10, 100_003} {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(i*7 + i>>9)
		}
		p := filepath.Join(dir, "f")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		want := sha256.Sum256(data)
		size, sum, err := FileSHA256(p)
		if err != nil || size != int64(n) || sum != hex.EncodeToString(want[:]) {
			t.Errorf("%d bytes: %d %s %v, want %d %x", n, size, sum, err, n, want)
		}
	}
	if _, _, err := FileSHA256(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}
