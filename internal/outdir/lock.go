package outdir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Lock is a held lock on a directory's LockName file: flock(2) where there is one
// (LockFileEx on Windows), so it dies with its process and a crashed run never blocks the
// next. Writers (prep, merge) hold it exclusively; train holds it shared while it reads the
// data and writes its ref_logps/ cache, so that no prep or merge replaces the data under it.
type Lock struct {
	f         *os.File
	exclusive bool
}

// errWouldBlock: the lock is held by someone else.
var errWouldBlock = errors.New("lock held")

// LockExclusive takes dir's lock for a run that writes dir, without waiting: when another
// process (or another Lock of this one) holds it, that is ErrInUse, naming the holder's pid
// when it is a writer. The holder's pid is written into the lock file while held.
func LockExclusive(dir string) (*Lock, error) {
	p := filepath.Join(dir, LockName)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := lockFile(f, true); err != nil {
		defer f.Close()
		if !errors.Is(err, errWouldBlock) {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		// A reader (train) holds it shared when a shared lock still succeeds.
		if lockFile(f, false) == nil {
			unlockFile(f)
			return nil, fmt.Errorf("%s %w (a ktoloader train is reading it); wait for it to finish or choose another directory", dir, ErrInUse)
		}
		return nil, fmt.Errorf("%s %w%s; wait for it to finish or choose another directory", dir, ErrInUse, holder(f))
	}
	// Record who holds it, for the message another run prints.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+" "+filepath.Base(os.Args[0])+"\n"), 0)
	}
	return &Lock{f: f, exclusive: true}, nil
}

// LockShared takes dir's lock shared, for a run that reads dir and writes only caches
// (train): any number of those at once, none while a prep or merge writes dir (ErrInUse).
// A directory this user cannot create the lock file in (read-only data) is not locked: the
// returned Lock is then a no-op, since no run of this user can write there either.
func LockShared(dir string) (*Lock, error) {
	p := filepath.Join(dir, LockName)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		if f, err = os.Open(p); err != nil {
			return &Lock{}, nil
		}
	}
	if err := lockFile(f, false); err != nil {
		defer f.Close()
		if errors.Is(err, errWouldBlock) {
			return nil, fmt.Errorf("%s %w%s (writing it); wait for it to finish", dir, ErrInUse, holder(f))
		}
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return &Lock{f: f}, nil
}

// holder reads the pid an exclusive holder wrote: " (pid N)", or "".
func holder(f *os.File) string {
	b := make([]byte, 64)
	n, _ := f.ReadAt(b, 0)
	fields := strings.Fields(string(b[:n]))
	if len(fields) == 0 {
		return ""
	}
	if _, err := strconv.Atoi(fields[0]); err != nil {
		return ""
	}
	return " (pid " + fields[0] + ")"
}

// Release drops the lock (and, for an exclusive one, the pid it recorded). Safe to call twice.
func (l *Lock) Release() {
	if l == nil || l.f == nil {
		return
	}
	if l.exclusive {
		l.f.Truncate(0)
	}
	unlockFile(l.f)
	l.f.Close()
	l.f = nil
}
