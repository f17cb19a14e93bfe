package outdir

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// The journal: each finished-named file is recorded, synced, before the rename that makes
// it, so that a killed run's files can be told from a user's. Entries are JSON strings, one
// a line: a path relative to the directory (slashes), or absolute for a file outside it.

// openJournal creates the journal holding entries, synced.
func (d *Dir) openJournal(entries []string) error {
	f, err := os.OpenFile(filepath.Join(d.Path, JournalName), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	d.journal = f
	var b bytes.Buffer
	for _, e := range entries {
		q, _ := json.Marshal(e)
		b.Write(q)
		b.WriteByte('\n')
	}
	if _, err := f.Write(b.Bytes()); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return syncDir(d.Path)
}

// Record notes in the journal, durably, that the run is about to give the files at paths
// their final names. Call it before the rename (or link). A nil Dir records nothing, for
// callers that run without one.
func (d *Dir) Record(paths ...string) error {
	if d == nil || len(paths) == 0 {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.journal == nil {
		return fmt.Errorf("outdir: %s: Record before Replace", d.Path)
	}
	var b []byte
	for _, p := range paths {
		q, _ := json.Marshal(d.entry(p))
		b = append(append(b, q...), '\n')
	}
	if _, err := d.journal.Write(b); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(d.Path, JournalName), err)
	}
	if err := d.journal.Sync(); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(d.Path, JournalName), err)
	}
	d.recorded = append(d.recorded, paths...)
	return nil
}

// entry is how the journal names p: relative to the directory, with slashes, when inside
// it, else absolute.
func (d *Dir) entry(p string) string {
	abs := resolveParent(p)
	if rel, err := filepath.Rel(d.real, abs); err == nil && filepath.IsLocal(rel) {
		return filepath.ToSlash(rel)
	}
	return abs
}

// resolveParent is p absolute with the symbolic links of its directory resolved (not of p
// itself: a rename replaces a link at p, it does not write through it).
func resolveParent(p string) string {
	abs, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	dir := filepath.Dir(abs)
	if r, err := filepath.EvalSymlinks(dir); err == nil {
		dir = r
	}
	return filepath.Join(dir, filepath.Base(abs))
}

// RelPath is how a manifest names p, a file of this run: relative to the directory with
// slashes, so that the directory with its neighbours can move and a reader in any working
// directory finds it ("../rejects.jsonl"); absolute when there is no relative path.
func (d *Dir) RelPath(p string) string {
	abs := resolveParent(p)
	rel, err := filepath.Rel(d.real, abs)
	if err != nil {
		return abs
	}
	return filepath.ToSlash(rel)
}

// readJournal reads the journal's entries; a torn last line (a crash while appending) is
// skipped: the file it named was never renamed into place.
func readJournal(p string) ([]string, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var s string
		if json.Unmarshal(sc.Bytes(), &s) == nil && s != "" {
			out = append(out, s)
		}
	}
	return out, sc.Err()
}
