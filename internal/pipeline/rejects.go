package pipeline

import (
	"encoding/json"
	"os"
	"path/filepath"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/loader"
)

// Rejects streams rejects.jsonl (DESIGN.md: file, line, field, reason, raw) under a temporary
// name; Commit renames it into place, so a crashed run leaves no finished-looking file. A nil
// *Rejects discards everything, for runs that keep no rejects file.
type Rejects struct {
	f   *export.AtomicFile
	enc *json.Encoder
	N   int64
}

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
	enc := json.NewEncoder(f)
	enc.SetEscapeHTML(false)
	return &Rejects{f: f, enc: enc}, nil
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

// Abort removes the temporary file; a no-op after Commit, so it can be deferred.
func (w *Rejects) Abort() {
	if w != nil {
		w.f.Abort()
	}
}
