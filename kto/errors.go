package kto

import (
	"errors"
	"fmt"
)

// Sentinels: errors.Is tells why; errors.As on *ConfigError or *LengthError tells the details.
var (
	// ErrInvalidConfig: a Config field is out of range; the *ConfigError names it.
	ErrInvalidConfig = errors.New("invalid kto config")
	// ErrTooLong: an example (or one sequence) does not fit in MaxLen tokens; the *LengthError
	// carries the length. Its reason name in rejects.jsonl is "too_long".
	ErrTooLong = errors.New("too long for --max-len")
	// ErrBadExample: an example breaks tokenize.Example's contract (PromptAssistant not
	// aligned with PromptIDs). An upstream bug, not bad user input.
	ErrBadExample = errors.New("malformed example")
	// ErrBadRow: a packed row is inconsistent (column lengths, segment numbering, positions,
	// masks); Unpack returns it so that verify can name what is broken.
	ErrBadRow = errors.New("malformed packed row")
	// ErrMixedBatch: PackBatch was given rows of more than one batch, which must never share
	// a packed row.
	ErrMixedBatch = errors.New("rows of different KTO batches")
)

// ConfigError names the Config field (and the CLI flag that sets it) that Validate refuses.
type ConfigError struct {
	Field  string // Go field name, e.g. "BatchSize"
	Flag   string // the prep flag, e.g. "--kto-batch-size"; "" when there is none
	Value  any
	Reason string
}

func (e *ConfigError) Error() string {
	name := e.Field
	if e.Flag != "" {
		name += " (" + e.Flag + ")"
	}
	return fmt.Sprintf("%v: %s = %v: %s", ErrInvalidConfig, name, e.Value, e.Reason)
}

func (e *ConfigError) Unwrap() error { return ErrInvalidConfig }

// LengthError is an example or sequence longer than MaxLen. It implements the Reason()
// convention of loader.Reasoner, so loader.Reason(err) gives "too_long" for rejects.jsonl.
type LengthError struct {
	Len    int // tokens: prompt+completion, or the completion alone when Completion is set
	MaxLen int // the limit it was held to
	// Completion is set when the completion alone cannot fit (with the BOS that keep-end
	// keeps), which no truncation policy can fix.
	Completion bool
	// AtLeast: Len is a lower bound from the text's size (CheckMinLength), not a count: the
	// row was rejected without being tokenized.
	AtLeast bool
}

func (e *LengthError) Error() string {
	atLeast := ""
	if e.AtLeast {
		atLeast = "at least "
	}
	if e.Completion {
		return fmt.Sprintf("%v: completion alone is %s%d tokens, at most %d fit beside BOS", ErrTooLong, atLeast, e.Len, e.MaxLen)
	}
	return fmt.Sprintf("%v: %s%d tokens > %d", ErrTooLong, atLeast, e.Len, e.MaxLen)
}

func (e *LengthError) Unwrap() error { return ErrTooLong }

// Reason is the stable name counted in the manifest and written to rejects.jsonl.
func (e *LengthError) Reason() string { return "too_long" }

func badRow(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBadRow}, args...)...)
}
