package outdir

import "fmt"

// usageErr is a sentinel whose errors are the caller's fault (exit code 2) or not (1).
type usageErr struct {
	msg   string
	usage bool
}

func (e *usageErr) Error() string { return e.msg }

// UsageError says whether errors of this kind are usage errors: the command's main maps an
// error chain holding one that says true to exit code 2.
func (e *usageErr) UsageError() bool { return e.usage }

// Sentinel errors: errors.Is tells why; each error built on one names the paths involved.
var (
	// ErrForeign: the output directory holds files no ktoloader run is known to have written.
	ErrForeign error = &usageErr{"refusing an output directory that holds files ktoloader did not write", true}
	// ErrUnsafe: an output would replace an input or a file the run did not make, or would
	// be written through a symbolic link.
	ErrUnsafe error = &usageErr{"unsafe output path", true}
	// ErrDuplicateInput: the same file given twice as input (by any path, link or hard link).
	ErrDuplicateInput error = &usageErr{"the same input file given twice", true}
	// ErrBadInput: an input that does not exist or cannot be read. Exit code 1, as for any
	// input the run cannot read.
	ErrBadInput error = &usageErr{"input cannot be read", false}
	// ErrInUse: another ktoloader process holds the directory's lock. Not a usage error:
	// the same command succeeds once the other run ends.
	ErrInUse error = &usageErr{"in use by another ktoloader", false}
)

// InputError is an input that cannot be opened for reading.
type InputError struct {
	Name string
	Err  error
}

func (e *InputError) Error() string   { return fmt.Sprintf("input %s: %v", e.Name, e.Err) }
func (e *InputError) Unwrap() []error { return []error{ErrBadInput, e.Err} }
