package export

import (
	"errors"
	"fmt"
)

// Sentinel errors: errors.Is tells why, FileError tells where.
var (
	// ErrOutputExists: the output directory holds a finished run (a manifest.json) and
	// overwriting it was not asked for.
	ErrOutputExists = errors.New("output directory holds a finished run (manifest.json); pass --force to overwrite it")
	// ErrCorrupt: a shard could not be decoded (truncated, bit-flipped, not Parquet/Arrow).
	ErrCorrupt = errors.New("corrupt or truncated file")
	// ErrSchema: a shard's columns are not those of the row type it is read as.
	ErrSchema = errors.New("schema does not match the row type")
	// ErrRowType: a Go type that cannot be a shard row (not a struct, or a field of a kind
	// that has no column type here).
	ErrRowType = errors.New("unsupported row type")
	// ErrFormat: an unknown --format value or file extension.
	ErrFormat = errors.New("unknown shard format")
	// ErrNoManifest: the directory holds no manifest.json, so it is not a finished run.
	ErrNoManifest = errors.New("no manifest.json (not a finished ktoloader output directory)")
	// ErrBadManifest: manifest.json is not valid JSON of the expected shape.
	ErrBadManifest = errors.New("invalid manifest.json")
	// ErrWriterClosed: Write or Close after Close, or after an earlier error.
	ErrWriterClosed = errors.New("shard writer closed")
)

// FileError names the file an error happened in.
type FileError struct {
	Path string
	Err  error
}

func (e *FileError) Error() string { return fmt.Sprintf("%s: %v", e.Path, e.Err) }
func (e *FileError) Unwrap() error { return e.Err }

// corruptf wraps a decoder's complaint as ErrCorrupt for path.
func corruptf(path string, format string, args ...any) error {
	return &FileError{Path: path, Err: fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))}
}
