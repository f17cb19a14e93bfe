// Package outdir is how a ktoloader run takes hold of its output directory: it refuses a
// directory that holds anything a ktoloader run did not write, an input where an output
// would go, and symbolic links where shards would be written; it locks the directory
// against other runs (flock, so a crashed run never blocks the next); it deletes only what a
// previous run's manifest or an interrupted run's journal lists, plus this program's own
// temporary files; and it journals each finished-named file before it is renamed into place,
// so that a run interrupted before its manifest can be cleaned without guessing, and a run
// that fails removes what it had renamed. It may import export (names, the manifest), the
// standard library, and golang.org/x/sys/windows for the lock on Windows.
//
// What is ours, in OUT: manifest.json (a ktoloader manifest) and every file it lists (the
// shards, the rejects file when inside OUT), the files an interrupted run's journal lists,
// report.html when it is a ktoloader report, temporary files named .tmp-PID-…, the lock
// file and the journal. ref_logps/ (train's cache) is left as it is: neither deleted nor
// refused. Anything else is foreign, and a directory holding a foreign entry is refused
// (ErrForeign), --force or not.
package outdir

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/ktoloader/ktoloader/export"
)

const (
	// LockName is the lock file. It stays (empty) after a run: removing it would let a run
	// that opened it a moment before lock a file no longer in the directory.
	LockName = ".ktoloader.lock"
	// JournalName lists, one JSON string a line, each file the running (or an interrupted)
	// run is about to rename into place, and the files of an earlier run it is about to
	// remove. It exists only while a run is writing; a finished or failed run removes it.
	JournalName = ".ktoloader.journal"
)

// shardKinds are the subdirectories shards are written into.
var shardKinds = export.ShardKinds()

// IsTemp reports whether name (a base name) is one of this program's temporary files
// (export.TempPattern).
func IsTemp(name string) bool { return export.IsTemp(name) }

// Options configure Open.
type Options struct {
	// Inputs are the files the run reads (not "-" or the embedded sample): none of them is
	// ever written, replaced or removed, whatever path names it (os.SameFile).
	Inputs []string
	// Force allows Replace to remove a previous finished run that is not the same run.
	Force bool
}

// Dir is an output directory held, locked, by one run from Open until Close.
type Dir struct {
	Path string
	// Prev is the finished run the directory holds (nil: none).
	Prev *export.Manifest

	real    string // Path, absolute, symlinks resolved
	force   bool
	created bool
	lock    *Lock
	inputs  []input
	plan    *plan

	mu       sync.Mutex
	journal  *os.File
	recorded []string // files this run renamed into place (journal entries)
	replaced bool     // Replace completed: the journal lists only this run's files
	finished bool
}

type input struct {
	name string
	fi   fs.FileInfo
}

// plan is what a scan found.
type plan struct {
	prev    *export.Manifest
	remove  []string // slash paths relative to the directory: earlier runs' files, our temporaries
	outside []string // absolute paths outside the directory that earlier runs wrote (rejects)
	journal []string // an interrupted run's journal entries
}

// Open takes hold of dir for one run. It checks, before creating or locking anything, that
// dir is a directory (or missing), holds nothing foreign (ErrForeign, naming a few entries),
// no input (ErrUnsafe, naming both paths) and no symbolic link in place of kto/, kto_packed/
// or sft/ (ErrUnsafe); then it creates dir when missing, takes its lock (ErrInUse when
// another run holds it: at once, no waiting) and scans again under the lock. Nothing is
// removed before Replace.
func Open(dir string, opt Options) (*Dir, error) {
	d := &Dir{Path: dir, force: opt.Force}
	for _, in := range opt.Inputs {
		fi, err := os.Stat(in)
		if err != nil {
			return nil, &InputError{Name: in, Err: err}
		}
		d.inputs = append(d.inputs, input{in, fi})
	}
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		d.created = true
	case err != nil:
		return nil, err
	case !st.IsDir():
		return nil, fmt.Errorf("output %s exists and is not a directory", dir)
	default:
		if _, err := d.scan(); err != nil { // refuse before writing even the lock file
			return nil, err
		}
	}
	if d.real, err = realPath(dir); err != nil {
		return nil, err
	}
	if d.lock, err = LockExclusive(dir); err != nil {
		d.removeCreated()
		return nil, err
	}
	if d.plan, err = d.scan(); err != nil {
		d.Close()
		return nil, err
	}
	d.Prev = d.plan.prev
	return d, nil
}

// realPath is p made absolute with every symbolic link resolved.
func realPath(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(abs)
}

// scan classifies every entry of the directory.
func (d *Dir) scan() (*plan, error) {
	p := &plan{}
	entries, err := os.ReadDir(d.Path)
	if err != nil {
		return nil, err
	}
	// An input in the directory (or in a shard directory) is refused first: whether the
	// run would remove it or it is foreign, the user asked to write over their data.
	for _, e := range entries {
		if err := d.notInput(filepath.Join(d.Path, e.Name()), ""); err != nil {
			return nil, err
		}
	}
	listed := map[string]bool{}
	for _, e := range entries {
		switch e.Name() {
		case export.ManifestName:
			m, err := export.ReadManifest(d.Path)
			if err != nil {
				return nil, fmt.Errorf("%w: %s is not a ktoloader manifest (%v); ktoloader writes only into a directory of its own: choose another --out",
					ErrForeign, filepath.Join(d.Path, export.ManifestName), err)
			}
			p.prev = m
			for _, f := range m.Files {
				listed[f.Path] = true
			}
			switch ri := m.Rejects; {
			case ri == nil || ri.Path == export.RejectsName:
				listed[export.RejectsName] = true
			default:
				p.outside = append(p.outside, export.ResolveRejects(d.Path, m))
			}
		case JournalName:
			if p.journal, err = readJournal(filepath.Join(d.Path, JournalName)); err != nil {
				return nil, err
			}
			for _, j := range p.journal {
				if filepath.IsAbs(j) {
					p.outside = append(p.outside, j)
				} else if filepath.IsLocal(filepath.FromSlash(j)) {
					listed[j] = true
				}
			}
		}
	}
	var foreign []string
	for _, e := range entries {
		name := e.Name()
		full := filepath.Join(d.Path, name)
		switch {
		case name == export.ManifestName, name == LockName, name == JournalName:
		case name == "ref_logps" && e.IsDir(): // train's cache of this data: train checks it
		case IsTemp(name) && e.Type().IsRegular():
			p.remove = append(p.remove, name)
		case name == export.ReportName && e.Type().IsRegular() && IsReport(full):
			p.remove = append(p.remove, name)
		case slices.Contains(shardKinds, name):
			if e.Type()&fs.ModeSymlink != 0 {
				target, _ := os.Readlink(full)
				return nil, fmt.Errorf("%w: %s is a symbolic link (to %s); ktoloader writes shards only into a real directory and never through a link: remove the link",
					ErrUnsafe, full, target)
			}
			if !e.IsDir() {
				foreign = append(foreign, name)
				continue
			}
			sub, err := os.ReadDir(full)
			if err != nil {
				return nil, err
			}
			for _, s := range sub {
				rel := path.Join(name, s.Name())
				if err := d.notInput(filepath.Join(full, s.Name()), ""); err != nil {
					return nil, err
				}
				switch {
				case listed[rel] && s.Type().IsRegular():
					p.remove = append(p.remove, rel)
				case IsTemp(s.Name()) && s.Type().IsRegular():
					p.remove = append(p.remove, rel)
				default:
					foreign = append(foreign, rel)
				}
			}
		case listed[name] && e.Type().IsRegular():
			p.remove = append(p.remove, name)
		default:
			foreign = append(foreign, name)
		}
	}
	if len(foreign) > 0 {
		slices.Sort(foreign)
		shown := foreign
		if len(shown) > 5 {
			shown = shown[:5]
		}
		more := ""
		if len(foreign) > len(shown) {
			more = fmt.Sprintf(" (%d in all)", len(foreign))
		}
		return nil, fmt.Errorf("%w: output directory %s holds %s%s, which no ktoloader manifest or journal lists; "+
			"ktoloader deletes only what an earlier run wrote, even with --force: move them away or choose another --out",
			ErrForeign, d.Path, strings.Join(shown, ", "), more)
	}
	return p, nil
}

// notInput fails when p, a path the run may write, replace or remove, is one of the inputs.
// what says how p is given ("" for a file found in the directory).
func (d *Dir) notInput(p, what string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return nil
	}
	for _, in := range d.inputs {
		if os.SameFile(fi, in.fi) {
			if what == "" {
				return fmt.Errorf("%w: the input %s is %s, inside the output directory %s; outputs never replace inputs: choose another --out",
					ErrUnsafe, in.name, p, d.Path)
			}
			return fmt.Errorf("%w: %s %s is the input %s; outputs never replace inputs", ErrUnsafe, what, p, in.name)
		}
	}
	return nil
}

// Replace removes the previous run the directory holds, when there is one, and starts this
// run's journal. A previous finished run is removed only when same (the caller's judgement
// that it is the run about to be made again, so nothing is lost) or with Options.Force;
// otherwise Replace returns export.ErrOutputExists. An interrupted run's journaled files and
// every temporary file are always removed. The manifest goes first, so that an interruption
// never leaves a directory that looks finished, and everything removed is journaled before.
func (d *Dir) Replace(same bool) error {
	if d.plan.prev != nil && !same && !d.force {
		return fmt.Errorf("%s: %w", d.Path, export.ErrOutputExists)
	}
	remove := slices.Clone(d.plan.remove)
	var keep []string // what the journal must keep listing until removed
	for _, r := range remove {
		if !IsTemp(path.Base(r)) {
			keep = append(keep, r)
		}
	}
	for _, j := range d.plan.journal {
		if !slices.Contains(keep, j) {
			keep = append(keep, j)
		}
	}
	if err := d.openJournal(keep); err != nil {
		return err
	}
	if d.plan.prev != nil {
		if err := os.Remove(filepath.Join(d.Path, export.ManifestName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := syncDir(d.Path); err != nil {
			return err
		}
	}
	for _, r := range remove {
		if err := os.Remove(filepath.Join(d.Path, filepath.FromSlash(r))); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	for _, j := range d.plan.journal {
		if !filepath.IsAbs(j) && filepath.IsLocal(filepath.FromSlash(j)) {
			if err := os.Remove(filepath.Join(d.Path, filepath.FromSlash(j))); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	for _, kind := range shardKinds {
		os.Remove(filepath.Join(d.Path, kind)) // only succeeds when empty
	}
	if err := syncDir(d.Path); err != nil {
		return err
	}
	// What was listed is gone: the journal starts afresh, for this run's files.
	if err := d.journal.Truncate(0); err != nil {
		return err
	}
	if _, err := d.journal.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if err := d.journal.Sync(); err != nil {
		return err
	}
	d.plan = &plan{outside: d.plan.outside}
	d.Prev = nil
	d.replaced = true
	return nil
}

// Finish marks the run finished, after its manifest is written: the journal goes.
func (d *Dir) Finish() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.finished = true
	if d.journal == nil {
		return nil
	}
	d.journal.Close()
	d.journal = nil
	if err := os.Remove(filepath.Join(d.Path, JournalName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return syncDir(d.Path)
}

// RemoveRun takes back a finished run that turned out bad (merge's verification failed):
// its manifest first, so the directory never looks finished, then every file it lists in
// the directory and the rejects file when inside. Only these are removed.
func (d *Dir) RemoveRun(m *export.Manifest) error {
	if err := os.Remove(filepath.Join(d.Path, export.ManifestName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := syncDir(d.Path); err != nil {
		return err
	}
	paths := []string{export.RejectsName}
	for _, f := range m.Files {
		paths = append(paths, f.Path)
	}
	for _, p := range paths {
		if !filepath.IsLocal(filepath.FromSlash(p)) {
			continue
		}
		if err := os.Remove(filepath.Join(d.Path, filepath.FromSlash(p))); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	for _, kind := range shardKinds {
		os.Remove(filepath.Join(d.Path, kind)) // only when empty
	}
	return syncDir(d.Path)
}

// Close ends the run's hold. A run that did not Finish removes the files it had renamed
// into place (so a failed run, a full disk included, leaves nothing that looks finished)
// and its journal; a directory it created and left empty goes too. Then the lock is
// released.
func (d *Dir) Close() {
	d.mu.Lock()
	if !d.finished && d.journal != nil {
		for _, p := range d.recorded {
			os.Remove(p)
		}
		d.journal.Close()
		d.journal = nil
		// A Replace that stopped half way keeps the journal: it lists the earlier run's
		// files not yet removed, which the next run then recognizes.
		if d.replaced {
			os.Remove(filepath.Join(d.Path, JournalName))
		}
		for _, kind := range shardKinds {
			os.Remove(filepath.Join(d.Path, kind)) // only when empty
		}
		syncDir(d.Path)
	}
	d.recorded = nil
	d.mu.Unlock()
	if !d.finished {
		d.removeCreated()
	}
	if d.lock != nil {
		d.lock.Release()
		d.lock = nil
	}
}

// removeCreated removes the directory when this run created it and it holds nothing but the
// lock file. The lock file is removed while still held, so no other run can be waiting on it
// (none waits: a second run fails at once).
func (d *Dir) removeCreated() {
	if !d.created {
		return
	}
	entries, err := os.ReadDir(d.Path)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.Name() != LockName {
			return
		}
	}
	os.Remove(filepath.Join(d.Path, LockName))
	os.Remove(d.Path)
}

// reportMark is how a ktoloader HTML report begins (export/report's template).
var reportMark = []byte("<title>ktoloader data report:")

// IsReport reports whether the file at p is a ktoloader HTML report.
func IsReport(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	head := make([]byte, 4096)
	n, _ := io.ReadFull(f, head)
	return bytes.Contains(head[:n], reportMark)
}

// syncDir makes a rename or removal in dir durable; file systems that cannot sync a
// directory are no reason to fail.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	f.Close()
	if err != nil && (errors.Is(err, errors.ErrUnsupported) || isEINVAL(err)) {
		return nil
	}
	return err
}
