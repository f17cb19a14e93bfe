package export

import (
	"bufio"
	"bytes"
	"encoding/json"
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
	"sync"
)

// An output directory is only ever changed by a run that holds its lock, and a run deletes
// only files it can show a ktoloader run wrote: those a previous run's manifest lists, those
// an interrupted run recorded in its journal before renaming them into place, a report.html
// that is a ktoloader report, and temporary files named .tmp-PID-…. A directory holding
// anything else is refused, so `--out .` or `--out /` never cost a user a file.

// Names in an output directory besides the shards and ManifestName, RejectsName, ReportName.
const (
	// LockName is the lock file. It stays (empty) after a run: removing it would let a run
	// that opened it just before lock a file no longer in the directory.
	LockName = ".ktoloader.lock"
	// journalName lists, one JSON string a line, each file a run is about to rename into
	// place (and those of an earlier run it is about to remove), so that a run interrupted
	// before its manifest can be cleaned without guessing. Removed once the manifest is.
	journalName = tmpPrefix + "journal"
	// RefLogpsDir is where train caches reference log-probs in a prep output; prep leaves it.
	RefLogpsDir = "ref_logps"
)

// Errors of OpenOutDir and CheckOutput; all name the paths involved.
var (
	// ErrLocked: another run holds the directory's lock.
	ErrLocked = errors.New("another ktoloader run is using this directory")
	// ErrForeignFiles: the directory holds files no ktoloader run is known to have written.
	ErrForeignFiles = errors.New("holds files ktoloader did not write")
	// ErrUnsafeOutput: an output would replace an input or a file the run did not make, or
	// would be written through a symbolic link.
	ErrUnsafeOutput = errors.New("unsafe output path")
)

// ourTemp matches this package's temporary names: .tmp-PID-….
var ourTemp = regexp.MustCompile(`^\.tmp-\d+-`)

// TempPattern is the os.CreateTemp pattern for a temporary file of this process: the pid
// makes it unique per process and recognisable as ktoloader's.
func TempPattern(base string) string {
	return fmt.Sprintf("%s%d-%s-*", tmpPrefix, os.Getpid(), base)
}

// errWouldBlock: the lock is held elsewhere.
var errWouldBlock = errors.New("lock held")

// LockDir takes the exclusive lock of dir (dir/.ktoloader.lock, created when missing), for
// a run that writes into dir; unlock releases it. A lock held by another process or another
// LockDir of this one is ErrLocked at once (no waiting). The lock dies with its process, so
// a crashed run never blocks the next one.
func LockDir(dir string) (unlock func(), err error) {
	p := filepath.Join(dir, LockName)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := tryLock(f); err != nil {
		f.Close()
		if errors.Is(err, errWouldBlock) {
			return nil, fmt.Errorf("%s: %w (it holds %s); wait for it to finish or choose another directory", dir, ErrLocked, LockName)
		}
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			unlockFile(f)
			f.Close()
		})
	}, nil
}

// OutDirOptions configure OpenOutDir.
type OutDirOptions struct {
	// Inputs are the files the run reads: nothing in the directory that is one of them
	// (os.SameFile: symlinks and hard links included) is ever replaced or removed.
	Inputs []string
}

// OutDir is an output directory held for one run (OpenOutDir), until Close.
type OutDir struct {
	Dir string
	// Previous is the finished run the directory holds (nil: none). Clear removes it;
	// whether that is wanted (--force, or the same run again) is the caller's decision.
	Previous *Manifest

	created  bool
	unlock   func()
	inputs   []inputFile
	plan     *outPlan
	mu       sync.Mutex
	journal  *os.File
	finished bool
	real     string // Dir with symlinks resolved
}

type inputFile struct {
	name string
	fi   fs.FileInfo
}

// outPlan is what a scan of the directory found.
type outPlan struct {
	prev    *Manifest
	remove  []string // slash paths relative to the directory: earlier runs' files and temporaries
	journal []string // the journal's entries (an interrupted run's outputs)
	outside []string // files outside the directory that earlier runs wrote (their rejects)
	hasLock bool
}

// OpenOutDir makes dir ready to be written by one run: it checks, before creating or locking
// anything, that dir holds nothing but earlier ktoloader runs' files (ErrForeignFiles
// otherwise, naming them), that kto/, kto_packed/ and sft/ are not symbolic links and that
// no input lies where the run would write or delete (ErrUnsafeOutput); then it creates dir
// if missing, takes its lock (ErrLocked when another run holds it) and scans it again.
func OpenOutDir(dir string, opt OutDirOptions) (*OutDir, error) {
	d := &OutDir{Dir: dir}
	for _, in := range opt.Inputs {
		if fi, err := os.Stat(in); err == nil {
			d.inputs = append(d.inputs, inputFile{in, fi})
		}
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
	unlock, err := LockDir(dir)
	if err != nil {
		d.removeCreated()
		return nil, err
	}
	d.unlock = unlock
	if d.plan, err = d.scan(); err != nil {
		d.Close()
		return nil, err
	}
	d.Previous = d.plan.prev
	if d.real, err = filepath.EvalSymlinks(dir); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// scan classifies every entry of the directory.
func (d *OutDir) scan() (*outPlan, error) {
	p := &outPlan{}
	entries, err := os.ReadDir(d.Dir)
	if err != nil {
		return nil, err
	}
	names := map[string]fs.DirEntry{}
	for _, e := range entries {
		names[e.Name()] = e
	}
	if _, ok := names[ManifestName]; ok {
		m, err := ReadManifest(d.Dir)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrForeignFiles, filepath.Join(d.Dir, ManifestName), err)
		}
		p.prev = m
	}
	if _, ok := names[journalName]; ok {
		if p.journal, err = readJournal(filepath.Join(d.Dir, journalName)); err != nil {
			return nil, err
		}
	}
	listed := map[string]bool{}
	if p.prev != nil {
		for _, f := range p.prev.Files {
			listed[f.Path] = true
		}
		if ri := p.prev.Rejects; ri == nil {
			listed[RejectsName] = true // manifests before rejects had an entry: always there
		} else {
			if ri.Path == RejectsName {
				listed[RejectsName] = true
			} else {
				p.outside = append(p.outside, resolveFrom(d.Dir, ri.Path))
			}
		}
	}
	for _, j := range p.journal {
		if filepath.IsAbs(j) {
			p.outside = append(p.outside, j)
		} else if localPath(j) {
			listed[j] = true
		}
	}
	var foreign []string
	for _, e := range entries {
		name := e.Name()
		switch {
		case name == ManifestName:
		case name == LockName:
			p.hasLock = true
		case name == journalName:
		case name == RefLogpsDir:
		case ourTemp.MatchString(name) && e.Type().IsRegular():
			p.remove = append(p.remove, name)
		case name == ReportName && e.Type().IsRegular() && isReport(filepath.Join(d.Dir, name)):
			p.remove = append(p.remove, name)
		case slices.Contains(shardKinds, name):
			if e.Type()&fs.ModeSymlink != 0 {
				target, _ := os.Readlink(filepath.Join(d.Dir, name))
				return nil, fmt.Errorf("%w: %s is a symbolic link (to %s); ktoloader writes shards only into a real directory: remove the link",
					ErrUnsafeOutput, filepath.Join(d.Dir, name), target)
			}
			if !e.IsDir() {
				foreign = append(foreign, name)
				continue
			}
			sub, err := os.ReadDir(filepath.Join(d.Dir, name))
			if err != nil {
				return nil, err
			}
			for _, s := range sub {
				rel := path.Join(name, s.Name())
				switch {
				case listed[rel] && !s.IsDir():
					p.remove = append(p.remove, rel)
				case ourTemp.MatchString(s.Name()) && s.Type().IsRegular():
					p.remove = append(p.remove, rel)
				default:
					foreign = append(foreign, rel)
				}
			}
		case listed[name] && !e.IsDir():
			p.remove = append(p.remove, name)
		default:
			foreign = append(foreign, name)
		}
	}
	// An input in the directory: refuse whether the run would remove it or it is foreign.
	for _, e := range entries {
		if err := d.notInput(filepath.Join(d.Dir, e.Name()), "lies in the output directory"); err != nil {
			return nil, err
		}
	}
	for _, rel := range p.remove {
		if err := d.notInput(filepath.Join(d.Dir, filepath.FromSlash(rel)), "lies in the output directory"); err != nil {
			return nil, err
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
			more = fmt.Sprintf(", … %d in all", len(foreign))
		}
		return nil, fmt.Errorf("%w: output directory %s holds %s%s, not written by ktoloader (no manifest or journal lists them); "+
			"ktoloader deletes only what an earlier run's manifest lists, even with --force: move them away or choose another --out",
			ErrForeignFiles, d.Dir, strings.Join(shown, ", "), more)
	}
	return p, nil
}

// notInput fails when p (a file the run may write, replace or remove) is one of the inputs.
func (d *OutDir) notInput(p, what string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return nil
	}
	for _, in := range d.inputs {
		if os.SameFile(fi, in.fi) {
			return fmt.Errorf("%w: the input %s %s as %s; outputs never replace or remove inputs", ErrUnsafeOutput, in.name, what, p)
		}
	}
	return nil
}

// CheckOutput checks an output path given by a flag (--rejects, --report): it must not be an
// input (ErrUnsafeOutput naming both), inside the directory it must be the default name
// (def), and outside it an existing file is replaced only when an earlier run of this
// directory wrote it (its manifest or journal lists it) or, with report set, when it is a
// ktoloader report.
func (d *OutDir) CheckOutput(flag, p, def string, report bool) error {
	if err := d.notInput(p, "is given as "+flag); err != nil {
		return err
	}
	dirOf, err := filepath.Abs(filepath.Dir(p))
	if err != nil {
		return err
	}
	if r, err := filepath.EvalSymlinks(dirOf); err == nil {
		dirOf = r
	}
	if rel, err := filepath.Rel(d.real, filepath.Join(dirOf, filepath.Base(p))); err == nil && filepath.IsLocal(rel) {
		if filepath.ToSlash(rel) != def {
			return fmt.Errorf("%w: %s %s lies inside the output directory; there it must be %s (the default), or choose a path outside",
				ErrUnsafeOutput, flag, p, filepath.Join(d.Dir, def))
		}
		return nil
	}
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().IsRegular() {
		if report && isReport(p) {
			return nil
		}
		if st, err := os.Stat(p); err == nil {
			for _, o := range d.plan.outside {
				if ost, err := os.Stat(o); err == nil && os.SameFile(st, ost) {
					return nil
				}
			}
		}
	}
	return fmt.Errorf("%w: %s %s exists and is not a file an earlier run into %s wrote; ktoloader does not replace it: remove it or choose another path",
		ErrUnsafeOutput, flag, p, d.Dir)
}

// Clear removes the previous run (manifest first, so that an interruption never leaves a
// directory that looks finished), an interrupted run's journaled files and temporaries,
// after recording them in the journal. Nothing else is touched.
func (d *OutDir) Clear() error {
	remove := slices.Clone(d.plan.remove)
	for _, j := range d.plan.journal {
		if localPath(j) && !slices.Contains(remove, j) {
			remove = append(remove, j)
		}
	}
	var keep []string
	for _, r := range remove {
		if ourTemp.MatchString(path.Base(r)) {
			continue // temporaries need no journal entry
		}
		keep = append(keep, r)
	}
	if err := d.openJournal(keep); err != nil {
		return err
	}
	if d.plan.prev != nil {
		if err := os.Remove(filepath.Join(d.Dir, ManifestName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := syncDir(d.Dir); err != nil {
			return err
		}
	}
	for _, r := range remove {
		if err := os.Remove(filepath.Join(d.Dir, filepath.FromSlash(r))); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	for _, kind := range shardKinds {
		os.Remove(filepath.Join(d.Dir, kind)) // only succeeds when empty
	}
	if err := syncDir(d.Dir); err != nil {
		return err
	}
	// What was listed is gone: start the journal afresh for this run's files.
	if err := d.journal.Truncate(0); err != nil {
		return err
	}
	if _, err := d.journal.Seek(0, io.SeekStart); err != nil {
		return err
	}
	d.plan = &outPlan{prev: nil, outside: d.plan.outside, hasLock: true}
	d.Previous = nil
	return d.journal.Sync()
}

// openJournal creates the journal holding entries, synced.
func (d *OutDir) openJournal(entries []string) error {
	f, err := os.OpenFile(filepath.Join(d.Dir, journalName), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
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
	return syncDir(d.Dir)
}

// Record notes in the journal, durably, that the run is about to create the files (paths
// as the writer names them), so that an interruption leaves it listed. Call it before the
// rename that gives p its final name. A nil OutDir records nothing.
func (d *OutDir) Record(paths ...string) error {
	if d == nil || len(paths) == 0 {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.journal == nil {
		return fmt.Errorf("export: %s: Record before Clear", d.Dir)
	}
	var b []byte
	for _, p := range paths {
		entry, err := d.entry(p)
		if err != nil {
			return err
		}
		q, _ := json.Marshal(entry)
		b = append(append(b, q...), '\n')
	}
	if _, err := d.journal.Write(b); err != nil {
		return err
	}
	return d.journal.Sync()
}

// entry is p relative to the directory (slashes) when inside it, else absolute.
func (d *OutDir) entry(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	dirOf := filepath.Dir(abs)
	if r, err := filepath.EvalSymlinks(dirOf); err == nil {
		dirOf = r
	}
	abs = filepath.Join(dirOf, filepath.Base(abs))
	if rel, err := filepath.Rel(d.real, abs); err == nil && filepath.IsLocal(rel) {
		return filepath.ToSlash(rel), nil
	}
	return abs, nil
}

// RelPath is how the manifest names p, a file this run wrote: relative to the directory with
// slashes, so that the directory (with its neighbour) can move and a reader from any working
// directory finds it ("../rejects/r.jsonl" for a rejects file beside it); absolute only when
// no relative path exists (another volume).
func (d *OutDir) RelPath(p string) string {
	abs, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	dirOf := filepath.Dir(abs)
	if r, err := filepath.EvalSymlinks(dirOf); err == nil {
		dirOf = r
	}
	rel, err := filepath.Rel(d.real, filepath.Join(dirOf, filepath.Base(abs)))
	if err != nil {
		return abs
	}
	return filepath.ToSlash(rel)
}

// Finish marks the run finished, after its manifest is written: the journal goes.
func (d *OutDir) Finish() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.finished = true
	if d.journal != nil {
		d.journal.Close()
		d.journal = nil
		if err := os.Remove(filepath.Join(d.Dir, journalName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return syncDir(d.Dir)
	}
	return nil
}

// Close releases the lock. A directory this run created and left with nothing written (a
// run that failed early) is removed again.
func (d *OutDir) Close() {
	d.mu.Lock()
	if d.journal != nil {
		d.journal.Close()
		d.journal = nil
	}
	d.mu.Unlock()
	if !d.finished && d.created {
		d.removeCreated()
	}
	if d.unlock != nil {
		d.unlock()
		d.unlock = nil
	}
}

// removeCreated removes the directory this run created when it holds only the lock and an
// empty journal.
func (d *OutDir) removeCreated() {
	if !d.created {
		return
	}
	entries, err := os.ReadDir(d.Dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		switch e.Name() {
		case LockName:
		case journalName:
			if j, err := readJournal(filepath.Join(d.Dir, journalName)); err != nil || len(j) > 0 {
				return
			}
		default:
			return
		}
	}
	os.Remove(filepath.Join(d.Dir, journalName))
	os.Remove(filepath.Join(d.Dir, LockName))
	os.Remove(d.Dir)
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

// resolveFrom resolves a manifest path (relative to dir, or absolute in old manifests).
func resolveFrom(dir, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, filepath.FromSlash(p))
}

// ResolveRejects is where the rejects file of the run in dir is: its manifest's path
// resolved against dir, dir/rejects.jsonl by default; inside reports whether it is in dir.
func ResolveRejects(dir string, m *Manifest) (p string, inside bool) {
	if m == nil || m.Rejects == nil || m.Rejects.Path == RejectsName || m.Rejects.Path == "" {
		return filepath.Join(dir, RejectsName), true
	}
	return resolveFrom(dir, m.Rejects.Path), false
}

// reportMark is how a ktoloader report begins (export/report's template).
var reportMark = []byte("<title>ktoloader data report:")

// isReport reports whether the file at p is a ktoloader HTML report.
func isReport(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	head := make([]byte, 4096)
	n, _ := io.ReadFull(f, head)
	return bytes.Contains(head[:n], reportMark)
}
