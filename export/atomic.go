package export

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
)

// Names in an output directory (internal/outdir decides what a run may delete).
const (
	ManifestName = "manifest.json"
	RejectsName  = "rejects.jsonl"
	ReportName   = "report.html"
	tmpPrefix    = ".tmp-"
)

// TempPattern is the os.CreateTemp pattern of a temporary file of this process named after
// base: .tmp-PID-base-RANDOM. The pid and CreateTemp's random suffix make it unique per
// process, so two runs never share a temporary file, and the prefix marks it as this
// program's (IsTemp).
func TempPattern(base string) string {
	return tmpPrefix + strconv.Itoa(os.Getpid()) + "-" + base + "-*"
}

// shardKinds are the subdirectories this package writes shards into.
var shardKinds = []string{KindKTO, KindKTOPacked, KindSFT}

// ShardKinds returns the subdirectories shards are written into.
func ShardKinds() []string { return append([]string(nil), shardKinds...) }

// ourTemp matches TempPattern's names.
var ourTemp = regexp.MustCompile(`^\.tmp-\d+-`)

// IsTemp reports whether name (a base name) is a temporary file of this program.
func IsTemp(name string) bool { return ourTemp.MatchString(name) }

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
	f, err := os.CreateTemp(dir, TempPattern(base))
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
