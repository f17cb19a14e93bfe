package loader

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Sentinel reasons for a rejected row. Each RowError wraps exactly one; errors.Is tells why,
// errors.As(&*RowError) tells where. Reason(err) gives the stable snake_case name written to
// rejects.jsonl and counted in the manifest.
var (
	ErrInvalidJSON       = errors.New("invalid JSON")
	ErrMissingField      = errors.New("missing field")
	ErrWrongType         = errors.New("wrong type")
	ErrUnknownRole       = errors.New("unknown role")
	ErrEmptyConversation = errors.New("empty conversation")
	ErrNoFinalAssistant  = errors.New("no final assistant message")
	ErrSystemNotFirst    = errors.New("system message not first")
	ErrRolesOutOfOrder   = errors.New("roles out of order")
	ErrEmptyToolName     = errors.New("empty tool call name")
	ErrBadArguments      = errors.New("tool call arguments are not valid JSON")
	ErrArgumentsNotObj   = errors.New("tool call arguments are not a JSON object")
	ErrMissingLabel      = errors.New("missing label")
	ErrLineTooLong       = errors.New("line too long")
	// ErrInvalidUTF8: text that is not valid UTF-8, or a \u escape of a lone UTF-16
	// surrogate. encoding/json would turn either into U+FFFD without a word, so the row
	// would train on text nobody wrote (and Python's json.loads refuses the bytes).
	ErrInvalidUTF8 = errors.New("invalid UTF-8")
)

var reasonNames = map[error]string{
	ErrInvalidJSON:       "invalid_json",
	ErrMissingField:      "missing_field",
	ErrWrongType:         "wrong_type",
	ErrUnknownRole:       "unknown_role",
	ErrEmptyConversation: "empty_conversation",
	ErrNoFinalAssistant:  "no_final_assistant",
	ErrSystemNotFirst:    "system_not_first",
	ErrRolesOutOfOrder:   "roles_out_of_order",
	ErrEmptyToolName:     "empty_tool_name",
	ErrBadArguments:      "bad_arguments",
	ErrArgumentsNotObj:   "arguments_not_object",
	ErrMissingLabel:      "missing_label",
	ErrLineTooLong:       "line_too_long",
	ErrInvalidUTF8:       "invalid_utf8",
}

// Reasoner is implemented by errors of later stages (template, truncation) that carry their own
// stable reason name, so one Reason function serves every stage.
type Reasoner interface{ Reason() string }

// Reason returns the stable snake_case reason of a row error: a loader sentinel's name, or
// the Reason() of any wrapped error that has one, or "error" when unknown.
func Reason(err error) string {
	for s, name := range reasonNames {
		if errors.Is(err, s) {
			return name
		}
	}
	var r Reasoner
	if errors.As(err, &r) {
		return r.Reason()
	}
	return "error"
}

// RowError is a bad row: where it is and why. Err is a sentinel (or a later stage's typed
// error); Detail says what exactly was wrong, for people.
type RowError struct {
	Source        // where the row is
	Field  string // JSON path such as conversations[2].tool_calls[0].function.arguments; "" for the whole line
	Err    error
	Detail string
	Raw    []byte // the raw line (a prefix only for over-long lines)
}

func (e *RowError) Error() string {
	s := e.Source.String() + ": "
	if e.Field != "" {
		s += e.Field + ": "
	}
	s += e.Err.Error()
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

func (e *RowError) Unwrap() error { return e.Err }

// Reason is the stable reason name of the wrapped error.
func (e *RowError) Reason() string { return Reason(e.Err) }

// Source is where a row came from: the input as the caller named it ("-" for stdin,
// "<embedded>/…" for the sample) and its 1-based line (Parquet: 1-based row number). Rows,
// their errors and examples carry it as it is; String is the one place it becomes text.
type Source struct {
	File string
	Line int64
}

// String is the source as the shards' source columns, error messages and the report write
// it: "file:line".
func (s Source) String() string { return s.File + ":" + strconv.FormatInt(s.Line, 10) }

// ParseSource reads a source back from what String wrote, for a reader of a written shard
// (the report); it splits at the last colon (file names may hold colons). ok is false when
// there is no colon (File is then src, Line 0) or the line is not a number.
func ParseSource(src string) (s Source, ok bool) {
	i := strings.LastIndexByte(src, ':')
	if i < 0 {
		return Source{File: src}, false
	}
	n, err := strconv.ParseInt(src[i+1:], 10, 64)
	return Source{File: src[:i], Line: n}, err == nil
}

func rowErr(field string, err error, format string, args ...any) *RowError {
	return &RowError{Field: field, Err: err, Detail: fmt.Sprintf(format, args...)}
}

// Reject is one line of rejects.jsonl (DESIGN.md: file, line, field, reason, raw), plus the
// human-readable detail.
type Reject struct {
	File   string `json:"file"`
	Line   int64  `json:"line"`
	Field  string `json:"field"`
	Reason string `json:"reason"`
	Detail string `json:"detail,omitempty"`
	Raw    string `json:"raw"`
}

// Record turns the error into its rejects.jsonl record.
func (e *RowError) Record() Reject {
	return Reject{File: e.File, Line: e.Line, Field: e.Field, Reason: e.Reason(), Detail: e.Detail, Raw: string(e.Raw)}
}
