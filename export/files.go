package export

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/parquet-go/parquet-go"
)

// Errors of CheckShards: a reader that trusted these files would train on another run's
// data, or silently on less of it.
var (
	// ErrChecksum: a file's size or sha256 is not the manifest's; it was changed after the
	// run, or copied from another run (other tokenizer, seed, data).
	ErrChecksum = errors.New("does not match the manifest's size and sha256 (changed, or from another run)")
	// ErrMissingFile: the manifest lists a file that is not there.
	ErrMissingFile = errors.New("listed in the manifest but missing")
	// ErrUnlisted: a shard file in the directory that the manifest does not list.
	ErrUnlisted = errors.New("shard not listed in the manifest (left from another run?)")
)

// shardName matches a finished shard file name: train-00000-of-00003.parquet.
var shardName = regexp.MustCompile(`^\w+(\.\w+)*-\d{5}-of-\d{5}\.(parquet|arrow)$`)

// Shards returns the manifest's shards of kind and split in shard order: the Parquet ones,
// or the Arrow ones when the run wrote no Parquet.
func (m *Manifest) Shards(kind, split string) []FileInfo {
	var pq, ar []FileInfo
	for _, fi := range m.Files {
		if fi.Kind != kind || fi.Split != split {
			continue
		}
		if fi.Format == FormatParquet {
			pq = append(pq, fi)
		} else {
			ar = append(ar, fi)
		}
	}
	out := pq
	if len(out) == 0 {
		out = ar
	}
	// Marshal sorts Files by path; a manifest built in memory may not be.
	slices.SortFunc(out, func(a, b FileInfo) int { return strings.Compare(a.Path, b.Path) })
	return out
}

// CheckShards returns m.Shards(kind, split) after checking them against the directory: each
// is present with the manifest's size and sha256, and no other shard of that kind and split
// lies beside them. Every file is read once, here; a reader that calls it before its first
// row knows its rows are the run's. Errors are *FileError naming the file.
func CheckShards(dir string, m *Manifest, kind, split string) ([]FileInfo, error) {
	files := m.Shards(kind, split)
	listed := map[string]bool{} // every format's: the .arrow twin of a .parquet shard is the run's
	for _, fi := range m.Files {
		if fi.Kind == kind {
			listed[path.Base(fi.Path)] = true
		}
	}
	for _, fi := range files {
		if !localPath(fi.Path) {
			return nil, &FileError{Path: filepath.Join(dir, ManifestName), Err: fmt.Errorf("%w: file path %q", ErrBadManifest, fi.Path)}
		}
		full := filepath.Join(dir, filepath.FromSlash(fi.Path))
		size, sum, err := FileSHA256(full)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, &FileError{Path: full, Err: ErrMissingFile}
		}
		if err != nil {
			return nil, err
		}
		if size != fi.Bytes || sum != fi.SHA256 {
			return nil, &FileError{Path: full, Err: fmt.Errorf("%w: %d bytes, sha256 %s; manifest: %d bytes, sha256 %s",
				ErrChecksum, size, sum, fi.Bytes, fi.SHA256)}
		}
	}
	entries, err := os.ReadDir(filepath.Join(dir, kind))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	for _, e := range entries {
		name := e.Name()
		if !listed[name] && shardName.MatchString(name) && strings.HasPrefix(name, split+"-") {
			return nil, &FileError{Path: filepath.Join(dir, kind, name), Err: ErrUnlisted}
		}
	}
	return files, nil
}

// WriteParquetFile writes rows to path as one Parquet file, atomically and with the shards'
// settings (zstd, fixed created_by: byte-identical for identical rows), and returns its
// sha256, hashed while writing. For files beside the shards that are not part of a split
// (a trainer's cached reference log-probs).
func WriteParquetFile[T any](path string, rows []T) (string, error) {
	h := sha256.New()
	err := WriteAtomic(path, func(w io.Writer) error {
		bw := bufio.NewWriterSize(io.MultiWriter(w, h), 1<<20)
		pw := parquet.NewGenericWriter[T](bw, parquet.Compression(zstdCodec),
			parquet.MaxRowsPerRowGroup(DefaultRowGroupRows), &parquet.WriterConfig{CreatedBy: CreatedBy})
		if _, err := pw.Write(rows); err != nil {
			return err
		}
		if err := pw.Close(); err != nil {
			return err
		}
		return bw.Flush()
	})
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
