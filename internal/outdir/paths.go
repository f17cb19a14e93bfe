package outdir

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/ktoloader/ktoloader/export"
)

// CheckInputs checks, before anything is created, that every named input exists and can be
// read (an InputError, ErrBadInput, otherwise) and that no file is given twice, by whatever
// path: ./a.jsonl and a.jsonl, a symbolic link, a hard link (ErrDuplicateInput naming both,
// unless allowDuplicates). skip names inputs that are not files ("-" for stdin, the
// embedded sample).
func CheckInputs(names []string, allowDuplicates bool, skip func(string) bool) error {
	type seen struct {
		name string
		fi   fs.FileInfo
	}
	var files []seen
	for _, name := range names {
		if skip != nil && skip(name) {
			continue
		}
		f, err := os.Open(name)
		if err != nil {
			return &InputError{Name: name, Err: err}
		}
		fi, err := f.Stat()
		f.Close()
		if err != nil {
			return &InputError{Name: name, Err: err}
		}
		if fi.IsDir() {
			return &InputError{Name: name, Err: errors.New("is a directory")}
		}
		for _, s := range files {
			if os.SameFile(s.fi, fi) && !allowDuplicates {
				return fmt.Errorf("%w: --input %s and --input %s are one file; every row would be written twice (pass --allow-duplicate-inputs if that is meant)",
					ErrDuplicateInput, s.name, name)
			}
		}
		files = append(files, seen{name, fi})
	}
	return nil
}

// Output kinds for CheckOutput.
const (
	OutputRejects = "rejects"
	OutputReport  = "report"
)

// CheckOutput checks p, an output path given by flag (--rejects, --report) of kind
// OutputRejects or OutputReport: it must not be an input (ErrUnsafe naming both); inside the
// directory it must be the default name (rejects.jsonl, report.html); outside it, an
// existing file is replaced only when it is an earlier run's (the rejects file this
// directory's manifest or journal lists; a ktoloader report), never a file the run did not
// make or a symbolic link.
func (d *Dir) CheckOutput(flag, p, kind string) error {
	if err := d.notInput(p, flag); err != nil {
		return err
	}
	def := export.RejectsName
	if kind == OutputReport {
		def = export.ReportName
	}
	abs := resolveParent(p)
	if rel, err := filepath.Rel(d.real, abs); err == nil && filepath.IsLocal(rel) {
		if filepath.ToSlash(rel) != def {
			return fmt.Errorf("%w: %s %s lies inside the output directory %s; there it must be %s (the default) or a path outside it",
				ErrUnsafe, flag, p, d.Path, filepath.Join(d.Path, def))
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
		if kind == OutputReport && IsReport(p) {
			return nil
		}
		if kind == OutputRejects {
			for _, o := range d.plan.outside {
				if ost, err := os.Stat(o); err == nil && os.SameFile(fi, ost) {
					return nil
				}
			}
		}
	}
	what := "a file"
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		what = "a symbolic link"
	case fi.IsDir():
		what = "a directory"
	}
	return fmt.Errorf("%w: %s %s exists and is %s that no earlier run into %s wrote; ktoloader does not replace it: remove it or choose another path",
		ErrUnsafe, flag, p, what, strings.TrimSuffix(d.Path, string(filepath.Separator)))
}

// CheckFile checks p, an output file given by flag to a command that has no output
// directory of its own (validate --rejects, report --html): it must not be one of inputs
// (ErrUnsafe naming both), and an existing file there is replaced only when keep says it is
// of the kind the command writes (nil: never); a symbolic link or directory never.
func CheckFile(flag, p string, inputs []string, keep func(string) bool) error {
	fi, err := os.Stat(p)
	if err == nil {
		for _, in := range inputs {
			if ifi, err := os.Stat(in); err == nil && os.SameFile(fi, ifi) {
				return fmt.Errorf("%w: %s %s is the input %s; outputs never replace inputs", ErrUnsafe, flag, p, in)
			}
		}
	}
	lfi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if lfi.Mode().IsRegular() && keep != nil && keep(p) {
		return nil
	}
	return fmt.Errorf("%w: %s %s exists and is not a file this command wrote; ktoloader does not replace it: remove it or choose another path",
		ErrUnsafe, flag, p)
}

// IsRejectsFile reports whether p looks like a rejects file (empty, or a first line that is
// a JSON object with the rejects fields), so that a command may replace its own.
func IsRejectsFile(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	line, err := bufio.NewReaderSize(f, 1<<16).ReadSlice('\n')
	if len(line) == 0 && errors.Is(err, io.EOF) {
		return true
	}
	var rec map[string]json.RawMessage
	if json.Unmarshal(line, &rec) != nil {
		return false
	}
	for _, k := range []string{"file", "line", "field", "reason", "raw"} {
		if _, ok := rec[k]; !ok {
			return false
		}
	}
	return true
}
