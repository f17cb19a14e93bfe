package pipeline

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"hash"
	"io"
	"os"
	"path/filepath"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/loader"
)

// Rejects streams rejects.jsonl (DESIGN.md: file, line, field, reason, raw) under a temporary
// name; Commit renames it into place, so a crashed run leaves no finished-looking file. A nil
// *Rejects discards everything, for runs that keep no rejects file.
type Rejects struct {
	f    *export.AtomicFile
	enc  *json.Encoder
	N    int64
	path string
	h    hash.Hash
	cw   countWriter
}

// countWriter counts the bytes written through it.
type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// NewRejects starts the rejects file at path; "" gives a nil (discarding) Rejects.
func NewRejects(path string) (*Rejects, error) {
	if path == "" {
		return nil, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := export.CreateAtomic(path)
	if err != nil {
		return nil, err
	}
	w := &Rejects{f: f, path: path, h: sha256.New()}
	w.enc = json.NewEncoder(io.MultiWriter(f, w.h, &w.cw))
	w.enc.SetEscapeHTML(false)
	return w, nil
}

// Write records one rejected row.
func (w *Rejects) Write(re *loader.RowError) error {
	if w == nil {
		return nil
	}
	w.N++
	return w.enc.Encode(re.Record())
}

// Commit makes the file final.
func (w *Rejects) Commit() error {
	if w == nil {
		return nil
	}
	return w.f.Commit()
}

// Info is the file's entry for the manifest, under name: its path relative to the output
// directory, slashes (export.RejectsName when it lies there, "../r.jsonl" beside it).
func (w *Rejects) Info(name string) *export.RejectsInfo {
	if w == nil {
		return nil
	}
	return &export.RejectsInfo{Path: name, Rows: w.N, Bytes: w.cw.n, SHA256: hex.EncodeToString(w.h.Sum(nil))}
}

// Abort removes the temporary file; a no-op after Commit, so it can be deferred.
func (w *Rejects) Abort() {
	if w != nil {
		w.f.Abort()
	}
}
