package safetensors

import (
	"errors"
	"strconv"
	"strings"
)

// Sentinels for errors.Is; every error this package returns is an *Error wrapping one of
// them (or an I/O error from the operating system).
var (
	// ErrHeader: the header is malformed or lies: a bad length, bad JSON, an unknown
	// dtype, a negative or overflowing shape, offsets that are reversed, overlap, leave a
	// gap or do not match shape × dtype size, bytes after the last tensor.
	ErrHeader = errors.New("invalid safetensors header")
	// ErrTruncated: the file ends before a tensor does.
	ErrTruncated = errors.New("safetensors file truncated")
	// ErrNativeFormat: the directory holds only Mistral's native consolidated.safetensors.
	ErrNativeFormat = errors.New("Mistral native-format weights")
	// ErrNoWeights: the directory holds no safetensors weights at all.
	ErrNoWeights = errors.New("no safetensors weights")
	// ErrIndex: model.safetensors.index.json is malformed or disagrees with its shards.
	ErrIndex = errors.New("safetensors index does not match its shards")
	// ErrClosed: Data after Close.
	ErrClosed = errors.New("safetensors file closed")
	// ErrNotFound: no tensor of that name.
	ErrNotFound = errors.New("tensor not found")
	// ErrTensor: a tensor given to WriteFile or WriteDir is unusable (bad name, dtype or
	// shape, data of the wrong length, a Write that wrote the wrong number of bytes).
	ErrTensor = errors.New("invalid tensor")
)

// Error says which file and tensor an error is about. Err is a sentinel above (or an
// operating-system error); Detail says what exactly was wrong.
type Error struct {
	File   string
	Tensor string
	Err    error
	Detail string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("safetensors: ")
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(": ")
	}
	if e.Tensor != "" {
		b.WriteString("tensor ")
		b.WriteString(strconv.Quote(e.Tensor))
		b.WriteString(": ")
	}
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	}
	if e.Detail != "" {
		if e.Err != nil {
			b.WriteString(": ")
		}
		b.WriteString(e.Detail)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }
