package loader

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Config tunes reading and validation. The zero value is the default.
type Config struct {
	// MaxLineBytes bounds one line (and so the memory one row may take); longer lines are
	// rejected with ErrLineTooLong and skipped. 0 means DefaultMaxLineBytes.
	MaxLineBytes int
	// MissingLabel, when set, is the label given to rows without one; nil rejects them.
	MissingLabel *bool
}

// DefaultMaxLineBytes is the line limit when Config.MaxLineBytes is 0 (DESIGN.md: 64 MiB).
const DefaultMaxLineBytes = 64 << 20

func (c Config) maxLine() int {
	if c.MaxLineBytes <= 0 {
		return DefaultMaxLineBytes
	}
	return c.MaxLineBytes
}

// ParseRow decodes and validates one JSON row. On a bad row it returns a *RowError carrying
// file, line, field path and reason (and the raw line).
func ParseRow(data []byte, file string, line int64, cfg Config) (Row, error) {
	row, err := parseRowRaw(data, file, line, cfg)
	if err != nil {
		err.Raw = append([]byte(nil), data...)
		return Row{}, err
	}
	row.Raw = append([]byte(nil), data...)
	return row, nil
}

// parseRowRaw is ParseRow without Raw.
func parseRowRaw(data []byte, file string, line int64, cfg Config) (Row, *RowError) {
	row, ok := fastRow(data, cfg)
	var rerr *RowError
	if !ok {
		row, rerr = parseRow(data, cfg)
	}
	if rerr != nil {
		rerr.Source = Source{File: file, Line: line}
		return Row{}, rerr
	}
	row.Source = Source{File: file, Line: line}
	return row, nil
}

// ParseOwnedRow is ParseRow for data that the caller hands over (from
// Reader.ReadOwnedRecord): the row, or its error, keeps data itself as Raw instead of a copy.
// The caller must not change data afterwards.
func ParseOwnedRow(data []byte, file string, line int64, cfg Config) (Row, error) {
	row, err := parseRowRaw(data, file, line, cfg)
	if err != nil {
		err.Raw = data
		return Row{}, err
	}
	row.Raw = data
	return row, nil
}

var knownKeys = map[string]bool{
	"conversations": true, "messages": true, "label": true, "tools": true,
	"behavior": true, "pattern": true, "category": true,
}

func parseRow(data []byte, cfg Config) (Row, *RowError) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		if json.Valid(data) {
			return Row{}, rowErr("", ErrWrongType, "a row must be a JSON object")
		}
		return Row{}, rowErr("", ErrInvalidJSON, "%v", err)
	}
	if top == nil {
		return Row{}, rowErr("", ErrWrongType, "a row must be a JSON object, not null")
	}
	var row Row

	// conversations, or its alias messages.
	key := "conversations"
	convRaw, ok := top[key]
	if !ok || isNull(convRaw) {
		if m, ok2 := top["messages"]; ok2 && !isNull(m) {
			key, convRaw, ok = "messages", m, true
		}
	}
	if !ok || isNull(convRaw) {
		return Row{}, rowErr("conversations", ErrMissingField, "need `conversations` or `messages`")
	}
	var msgsRaw []json.RawMessage
	if err := json.Unmarshal(convRaw, &msgsRaw); err != nil {
		return Row{}, rowErr(key, ErrWrongType, "want a list of messages, got %s", kindOf(convRaw))
	}
	if len(msgsRaw) == 0 {
		return Row{}, rowErr(key, ErrEmptyConversation, "no messages")
	}
	row.Messages = make([]Message, len(msgsRaw))
	for i, mr := range msgsRaw {
		path := fmt.Sprintf("%s[%d]", key, i)
		if err := parseMessage(mr, path, &row.Messages[i]); err != nil {
			return Row{}, err
		}
	}
	if err := checkOrder(row.Messages, key); err != nil {
		return Row{}, err
	}

	// label: a JSON bool.
	if lr, ok := top["label"]; ok && !isNull(lr) {
		switch string(bytes.TrimSpace(lr)) {
		case "true":
			row.Label, row.HasLabel = true, true
		case "false":
			row.Label, row.HasLabel = false, true
		default:
			return Row{}, rowErr("label", ErrWrongType, "want a JSON bool, got %s", kindOf(lr))
		}
	} else if cfg.MissingLabel != nil {
		row.Label = *cfg.MissingLabel
	} else {
		return Row{}, rowErr("label", ErrMissingLabel, "no label (use --missing-label=true|false to default it)")
	}

	// behavior, falling back to pattern, then category.
	for _, k := range []string{"behavior", "pattern", "category"} {
		br, ok := top[k]
		if !ok || isNull(br) {
			continue
		}
		var s string
		if err := decodeString(br, k, &s); err != nil {
			return Row{}, err
		}
		row.Behavior, row.BehaviorField = s, k
		break
	}

	if tr, ok := top["tools"]; ok && !isNull(tr) {
		t := bytes.TrimSpace(tr)
		if len(t) == 0 || t[0] != '[' {
			return Row{}, rowErr("tools", ErrWrongType, "want a list of tool schemas, got %s", kindOf(tr))
		}
		if !utf8.Valid(t) {
			return Row{}, invalidUTF8("tools", t)
		}
		row.Tools = append(json.RawMessage(nil), t...)
	}

	for k, v := range top {
		if knownKeys[k] {
			continue
		}
		if row.Extra == nil {
			row.Extra = make(map[string]json.RawMessage)
		}
		row.Extra[k] = v
	}
	// Whatever was not checked above (keys, kept raw values) must be UTF-8 too: the row
	// is written back verbatim to rejects and read by Python, which refuses such bytes.
	if !utf8.Valid(data) {
		return Row{}, invalidUTF8("", data)
	}
	return row, nil
}

var knownRoles = map[string]bool{"system": true, "user": true, "assistant": true, "tool": true}

func parseMessage(raw json.RawMessage, path string, m *Message) *RowError {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return rowErr(path, ErrWrongType, "want a message object, got %s", kindOf(raw))
	}
	rr, ok := obj["role"]
	if !ok || isNull(rr) {
		return rowErr(path+".role", ErrMissingField, "message has no role")
	}
	if err := decodeString(rr, path+".role", &m.Role); err != nil {
		return err
	}
	if !knownRoles[m.Role] {
		return rowErr(path+".role", ErrUnknownRole, "%q is not system, user, assistant or tool", m.Role)
	}

	if cr, ok := obj["content"]; ok && !isNull(cr) {
		s, err := parseContent(cr, path+".content")
		if err != nil {
			return err
		}
		m.Content = &s
	}
	if err := optString(obj, "name", path, &m.Name); err != nil {
		return err
	}
	if err := optString(obj, "tool_call_id", path, &m.ToolCallID); err != nil {
		return err
	}
	if tr, ok := obj["tool_calls"]; ok && !isNull(tr) {
		var calls []json.RawMessage
		if err := json.Unmarshal(tr, &calls); err != nil {
			return rowErr(path+".tool_calls", ErrWrongType, "want a list, got %s", kindOf(tr))
		}
		if len(calls) > 0 && m.Role != "assistant" {
			return rowErr(path+".tool_calls", ErrWrongType, "only assistant messages may carry tool calls, not %s", m.Role)
		}
		m.ToolCalls = make([]ToolCall, 0, len(calls))
		for j, c := range calls {
			var tc ToolCall
			if err := parseToolCall(c, fmt.Sprintf("%s.tool_calls[%d]", path, j), &tc); err != nil {
				return err
			}
			m.ToolCalls = append(m.ToolCalls, tc)
		}
		if len(m.ToolCalls) == 0 {
			m.ToolCalls = nil // DESIGN.md: an empty list counts as no tool calls
		}
	}

	switch m.Role {
	case "assistant":
		if m.Content == nil && len(m.ToolCalls) == 0 {
			return rowErr(path+".content", ErrMissingField, "assistant message has neither content nor tool calls")
		}
	default:
		if m.Content == nil {
			return rowErr(path+".content", ErrMissingField, "%s message has no content", m.Role)
		}
	}
	return nil
}

// parseContent accepts a string, or the list-of-parts form ([{"type":"text","text":…}]),
// whose text parts are joined.
func parseContent(raw json.RawMessage, path string) (string, *RowError) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		if replaced(raw, s) {
			return "", invalidUTF8(path, raw)
		}
		return s, nil
	}
	var parts []struct {
		Type string          `json:"type"`
		Text json.RawMessage `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", rowErr(path, ErrWrongType, "want a string or a list of text parts, got %s", kindOf(raw))
	}
	var b strings.Builder
	for i, p := range parts {
		if p.Type != "text" || p.Text == nil || isNull(p.Text) {
			return "", rowErr(path, ErrWrongType, "content part %d is %q, only text parts are supported", i, p.Type)
		}
		var t string
		if err := decodeString(p.Text, fmt.Sprintf("%s[%d].text", path, i), &t); err != nil {
			return "", err
		}
		b.WriteString(t)
	}
	return b.String(), nil
}

func parseToolCall(raw json.RawMessage, path string, tc *ToolCall) *RowError {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return rowErr(path, ErrWrongType, "want a tool call object, got %s", kindOf(raw))
	}
	if err := optString(obj, "id", path, &tc.ID); err != nil {
		return err
	}
	if err := optString(obj, "type", path, &tc.Type); err != nil {
		return err
	}
	fr, ok := obj["function"]
	if !ok || isNull(fr) {
		return rowErr(path+".function", ErrMissingField, "tool call has no function")
	}
	var fn map[string]json.RawMessage
	if err := json.Unmarshal(fr, &fn); err != nil || fn == nil {
		return rowErr(path+".function", ErrWrongType, "want an object, got %s", kindOf(fr))
	}
	nr, ok := fn["name"]
	if !ok || isNull(nr) {
		return rowErr(path+".function.name", ErrMissingField, "tool call has no name")
	}
	if err := decodeString(nr, path+".function.name", &tc.Name); err != nil {
		return err
	}
	if strings.TrimSpace(tc.Name) == "" {
		return rowErr(path+".function.name", ErrEmptyToolName, "tool call name is empty")
	}
	apath := path + ".function.arguments"
	ar, ok := fn["arguments"]
	if !ok || isNull(ar) {
		return rowErr(apath, ErrMissingField, "tool call has no arguments")
	}
	ar = bytes.TrimSpace(ar)
	if ar[0] == '"' {
		var s string
		if err := json.Unmarshal(ar, &s); err != nil {
			return rowErr(apath, ErrWrongType, "%v", err)
		}
		if replaced(ar, s) {
			return invalidUTF8(apath, ar)
		}
		args := bytes.TrimSpace([]byte(s))
		if !json.Valid(args) {
			// Decode once more only to name the syntax error precisely.
			var v any
			err := json.Unmarshal(args, &v)
			return rowErr(apath, ErrBadArguments, "%v", err)
		}
		if args[0] != '{' {
			return rowErr(apath, ErrArgumentsNotObj, "arguments decode to %s", kindOf(args))
		}
		tc.setArguments(args)
		tc.ArgumentsWasString = true
		return nil
	}
	if ar[0] != '{' {
		return rowErr(apath, ErrArgumentsNotObj, "arguments are %s", kindOf(ar))
	}
	if !utf8.Valid(ar) {
		return invalidUTF8(apath, ar)
	}
	tc.setArguments(append(json.RawMessage(nil), ar...))
	return nil
}

// checkOrder enforces the conversation shape every trainer expects: an optional system
// message first, then a user turn, tool results only after an assistant's tool calls, no two
// user or plain-assistant turns in a row, and a final assistant message to learn from. The
// chat template adds its own, stricter alternation rule later (tokenize).
func checkOrder(msgs []Message, key string) *RowError {
	prev := ""
	prevCalls := false
	for i, m := range msgs {
		path := fmt.Sprintf("%s[%d].role", key, i)
		switch m.Role {
		case "system":
			if i != 0 {
				return rowErr(path, ErrSystemNotFirst, "system message at position %d", i)
			}
		case "user":
			if prev == "user" {
				return rowErr(path, ErrRolesOutOfOrder, "two user messages in a row")
			}
		case "assistant":
			if prev == "" || prev == "system" {
				return rowErr(path, ErrRolesOutOfOrder, "the conversation must start with a user message")
			}
			if prev == "assistant" && !prevCalls {
				return rowErr(path, ErrRolesOutOfOrder, "two assistant messages in a row")
			}
		case "tool":
			if !(prev == "tool" || (prev == "assistant" && prevCalls)) {
				return rowErr(path, ErrRolesOutOfOrder, "tool result does not follow an assistant tool call")
			}
		}
		prev, prevCalls = m.Role, len(m.ToolCalls) > 0
	}
	last := msgs[len(msgs)-1]
	if last.Role != "assistant" {
		return rowErr(fmt.Sprintf("%s[%d].role", key, len(msgs)-1), ErrNoFinalAssistant,
			"the last message is %s, not an assistant answer", last.Role)
	}
	return nil
}

func isNull(raw json.RawMessage) bool {
	return string(bytes.TrimSpace(raw)) == "null"
}

// kindOf names a JSON value's type for error messages.
func kindOf(raw []byte) string {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 {
		return "nothing"
	}
	switch t[0] {
	case '{':
		return "an object"
	case '[':
		return "a list"
	case '"':
		return "a string"
	case 't', 'f':
		return "a bool"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

// optString decodes the optional string member key of obj (at path) into s; absent or null
// leaves s as it is.
func optString(obj map[string]json.RawMessage, key, path string, s *string) *RowError {
	if raw, ok := obj[key]; ok && !isNull(raw) {
		return decodeString(raw, path+"."+key, s)
	}
	return nil
}

// decodeString decodes the JSON string raw into s, refusing what encoding/json would
// silently repair (see replaced).
func decodeString(raw json.RawMessage, field string, s *string) *RowError {
	if err := json.Unmarshal(raw, s); err != nil {
		return rowErr(field, ErrWrongType, "want a string, got %s", kindOf(raw))
	}
	if replaced(raw, *s) {
		return invalidUTF8(field, raw)
	}
	return nil
}

// replaced reports whether decoding the JSON string raw into s replaced something with
// U+FFFD: encoding/json does so, without an error, for bytes that are not UTF-8 and for \u
// escapes of lone UTF-16 surrogates. Every U+FFFD of s must come from raw, spelled as is
// or as the escape \ufffd; any other is a replacement.
func replaced(raw []byte, s string) bool {
	n := strings.Count(s, "\uFFFD")
	if n == 0 {
		return false
	}
	return n != bytes.Count(raw, []byte("\uFFFD"))+countEscapedFFFD(raw)
}

// countEscapedFFFD counts the escapes \ufffd (any case) in the JSON text raw.
func countEscapedFFFD(raw []byte) int {
	n := 0
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' || i+1 >= len(raw) {
			continue
		}
		if raw[i+1] == 'u' && i+6 <= len(raw) && strings.EqualFold(string(raw[i+2:i+6]), "fffd") {
			n++
		}
		i++ // skip the escaped character, so that \\ufffd is not counted
	}
	return n
}

// invalidUTF8 is the RowError for text in raw that is not valid UTF-8, naming the first
// bad byte (or the escape) for people.
func invalidUTF8(field string, raw []byte) *RowError {
	if i := firstInvalid(raw); i >= 0 {
		return rowErr(field, ErrInvalidUTF8, "byte %#x at offset %d of the value is not UTF-8", raw[i], i)
	}
	return rowErr(field, ErrInvalidUTF8, "a \\u escape of a lone UTF-16 surrogate (not a character)")
}

func firstInvalid(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return -1
}
