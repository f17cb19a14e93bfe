package export

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
)

// FileSHA256 streams the file at path and returns its size and hex sha256, as the manifest
// lists files (and as the trainer identifies a cached file): the one place a file's digest
// is computed from disk.
func FileSHA256(path string) (size int64, sum string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return n, "", &FileError{Path: path, Err: err}
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}
