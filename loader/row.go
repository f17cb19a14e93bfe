// Package loader reads tool-calling chat rows (OpenAI format, as in the Nexus KTO set) from
// JSONL, gzip/zstd-compressed JSONL and Parquet as a stream, validates each row, and reports
// every bad row as a *RowError naming file, line, field path and a sentinel reason. A bad row
// never stops the stream: the caller decides (--strict) whether to stop.
//
// It is the bottom layer and imports no other package of this module (internal/layering_test.go).
package loader

import "encoding/json"

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
}
