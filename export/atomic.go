package export

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
)

// Names in an output directory. Only these are ever deleted by PrepareOutDir.
const (
	ManifestName = "manifest.json"
	RejectsName  = "rejects.jsonl"
	ReportName   = "report.html"
	tmpPrefix    = ".tmp-"
)

// shardKinds are the subdirectories this package writes shards into.
var shardKinds = []string{KindKTO, KindKTOPacked, KindSFT}

// shardName matches a finished shard file name: train-00000-of-00003.parquet.
var shardName = regexp.MustCompile(`^\w+(\.\w+)*-\d{5}-of-\d{5}\.(parquet|arrow)$`)

// AtomicFile is a file written under a temporary name in its final directory and renamed
// into place by Commit, so that a reader (or a crash) never sees it half written.
type AtomicFile struct {
	*os.File
	path string
	done bool
}

// CreateAtomic starts writing path atomically; nothing appears at path before Commit.
func CreateAtomic(path string) (*AtomicFile, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, tmpPrefix+base+"-*")
	if err != nil {
		return nil, err
	}
	return &AtomicFile{File: f, path: path}, nil
}

// Commit syncs the file, renames it to its final name and syncs the directory.
func (a *AtomicFile) Commit() error {
	if a.done {
		return fmt.Errorf("export: %s already committed or aborted", a.path)
	}
	a.done = true
	err := a.Chmod(0o644) // CreateTemp's 0600 would hide outputs from other users
	if err == nil {
		err = a.Sync()
	}
	if cerr := a.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(a.Name(), a.path)
	}
	if err != nil {
		os.Remove(a.Name())
		return err
	}
	return syncDir(filepath.Dir(a.path))
}

// Abort removes the temporary file. It is a no-op after Commit, so it can be deferred.
func (a *AtomicFile) Abort() {
	if a.done {
		return
	}
	a.done = true
	a.Close()
	os.Remove(a.Name())
}

// WriteFileAtomic writes data to path through a synced temporary file in the same
// directory and a rename: path holds either its old content or data, never a part.
func WriteFileAtomic(path string, data []byte) error {
	a, err := CreateAtomic(path)
	if err != nil {
		return err
	}
	defer a.Abort()
	if _, err := a.Write(data); err != nil {
		return err
	}
	return a.Commit()
}

// WriteAtomic writes path atomically, as WriteFileAtomic does, with what write puts into
// the file: for content produced by an encoder rather than held in memory.
func WriteAtomic(path string, write func(io.Writer) error) error {
	a, err := CreateAtomic(path)
	if err != nil {
		return err
	}
	defer a.Abort()
	if err := write(a); err != nil {
		return err
	}
	return a.Commit()
}

// syncDir makes a rename in dir durable. Filesystems that cannot sync a directory say
// EINVAL; that is no reason to fail a run.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) {
		return nil
	}
	return err
}

// PrepareOutDir makes dir ready for a run. A missing directory is created. A directory
// holding manifest.json is a finished run: without force that is ErrOutputExists; with
// force it is cleaned. A directory without a manifest is a crashed run (or a new or
// unrelated directory) and is cleaned. Cleaning removes only what a run writes:
// manifest.json (first, so that an interrupted cleaning never leaves a directory that looks
// finished), rejects.jsonl, report.html, .tmp-* files, and in kto/, kto_packed/ and sft/ the
// shard files (split-XXXXX-of-YYYYY.parquet|arrow) and .tmp-* files, removing those
// subdirectories when they end up empty. Any other file, ref_logps/ included, is left alone.
func PrepareOutDir(dir string, force bool) error {
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("output %s exists and is not a directory", dir)
	}
	manifest := filepath.Join(dir, ManifestName)
	if _, err := os.Lstat(manifest); err == nil {
		if !force {
			return fmt.Errorf("%s: %w", dir, ErrOutputExists)
		}
		if err := os.Remove(manifest); err != nil {
			return err
		}
		if err := syncDir(dir); err != nil {
			return err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := removeOurs(dir, func(name string) bool {
		return name == RejectsName || name == ReportName || strings.HasPrefix(name, tmpPrefix)
	}); err != nil {
		return err
	}
	for _, kind := range shardKinds {
		sub := filepath.Join(dir, kind)
		if st, err := os.Lstat(sub); err != nil || !st.IsDir() {
			continue
		}
		if err := removeOurs(sub, func(name string) bool {
			return shardName.MatchString(name) || strings.HasPrefix(name, tmpPrefix)
		}); err != nil {
			return err
		}
		os.Remove(sub) // only succeeds when empty: a user's file keeps the directory
	}
	return syncDir(dir)
}

// removeOurs removes the regular files (and symlinks) in dir whose names ours accepts.
func removeOurs(dir string, ours func(string) bool) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() || !ours(e.Name()) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}
