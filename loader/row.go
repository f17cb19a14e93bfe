// Package loader reads tool-calling chat rows (OpenAI format, as in the Nexus KTO set) from
// JSONL, gzip/zstd-compressed JSONL and Parquet as a stream, validates each row, and reports
// every bad row as a *RowError naming file, line, field path and a sentinel reason. A bad row
// never stops the stream: the caller decides (--strict) whether to stop.
//
// It is the bottom layer: of this module it may import only the leaf codecs internal/jsonstr
// and internal/pyjson, internal/stablehash and testdata (internal/layering_test.go).
package loader

import (
	"encoding/json"
	"strings"

	"github.com/ktoloader/ktoloader/internal/pyjson"
)

// Row is one validated input row.
type Row struct {
	Source // File and Line: where it was read

	Messages []Message
	// Tools is the row's own `tools` list as raw JSON (nil when absent or null).
	Tools json.RawMessage

	Label    bool
	HasLabel bool // false only when the row had no label and a --missing-label default was applied

	Behavior      string
	BehaviorField string // "behavior", "pattern", "category", or "" when none was present

	// Extra keeps every top-level key this package does not interpret, verbatim.
	Extra map[string]json.RawMessage

	// Raw is the input line as read, so a later stage that rejects the row can still write
	// it to rejects.jsonl, and sharding can hash it.
	Raw []byte
}

// Message is one chat message. Content is nil for JSON null or a missing content.
type Message struct {
	Role       string // system, user, assistant, tool
	Content    *string
	ToolCalls  []ToolCall
	ToolCallID string // tool messages: the id of the call this answers ("" when absent)
	Name       string // optional `name`
}

// Text returns the content or "" when it is null.
func (m *Message) Text() string {
	if m.Content == nil {
		return ""
	}
	return *m.Content
}

// ToolCall is one entry of an assistant message's tool_calls.
type ToolCall struct {
	ID   string // as given ("" when absent); tokenize repairs ids the template refuses
	Type string // usually "function"
	Name string
	// Arguments is the arguments object as JSON text, exactly as the input had it (after
	// unquoting when it was a JSON string), so key order and number spelling are kept.
	Arguments json.RawMessage
	// ArgumentsWasString records whether the input held the arguments as a JSON string.
	ArgumentsWasString bool
	// PyArguments is Arguments as the chat template writes them, Python's
	// json.dumps(json.loads(Arguments), ensure_ascii=False) (internal/pyjson): parsed once,
	// here, so that tokenize renders without parsing. "" when ArgumentsErr is set.
	PyArguments string
	// ArgumentsErr is why Python's json.loads refuses Arguments that encoding/json accepts
	// (a \u escape of a lone surrogate, an integer of more than 4300 digits), or
	// ErrArgumentsNotObj for arguments that are no object (a hand-built row). The loader keeps
	// such a row, as before it parsed them; the template refuses it, naming this error.
	ArgumentsErr error
}

// WithArguments returns tc holding args (JSON text, kept as is) as its Arguments, with
// PyArguments or ArgumentsErr made from them: the one place a row's arguments are parsed.
// Rows built by hand (tests) set their calls' arguments through it.
func (tc ToolCall) WithArguments(args json.RawMessage) ToolCall {
	tc.setArguments(args)
	return tc
}

func (tc *ToolCall) setArguments(args json.RawMessage) {
	tc.Arguments, tc.PyArguments, tc.ArgumentsErr = args, "", nil
	v, err := pyjson.Parse(args)
	switch {
	case err != nil:
		tc.ArgumentsErr = err
	case v.Kind != pyjson.Object:
		tc.ArgumentsErr = ErrArgumentsNotObj
	default:
		var b strings.Builder
		b.Grow(len(args) + len(args)/8)
		v.Write(&b)
		tc.PyArguments = b.String()
	}
}
