package loader

import (
	"bytes"
	"encoding/json"
	"strings"
	"unicode/utf8"

	"github.com/ktoloader/ktoloader/internal/jsonstr"
)

// The fast path. Most rows are plain: string contents, tool calls with string arguments, a
// bool label, a behavior string. encoding/json validates every nested value again each time
// parseRow unmarshals a part of the row (four or five passes over most bytes) and allocates a
// map per object; on such rows that was most of prep's parsing time. fastRow validates the
// row once, then walks it without re-validating. It accepts only rows it fully understands
// and that parseRow would accept: anything else (every bad row, duplicate keys, escaped
// keys, content as a list of parts, U+FFFD anywhere in a decoded string) returns ok false,
// and parseRow decides, with its exact errors. For the rows it accepts, its Row equals
// parseRow's (TestFastRowMatches and FuzzFastRow check this).
func fastRow(data []byte, cfg Config) (row Row, ok bool) {
	if !utf8.Valid(data) || !json.Valid(data) {
		return Row{}, false
	}
	i := jsonSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return Row{}, false
	}
	var known [7][]byte // the values of knownKeys, in fastKeys order
	dup := false
	ok = eachMember(data[i:jsonEnd(data, i)], func(key, val []byte) bool {
		if bytes.IndexByte(key, '\\') >= 0 {
			return false
		}
		if k := fastKeyIndex(key); k >= 0 {
			if known[k] != nil {
				dup = true
				return false
			}
			known[k] = val
			return true
		}
		if row.Extra == nil {
			row.Extra = make(map[string]json.RawMessage)
		}
		if _, seen := row.Extra[string(key)]; seen {
			return false
		}
		row.Extra[string(key)] = append(json.RawMessage(nil), val...)
		return true
	})
	if !ok || dup {
		return Row{}, false
	}
	conv, msgs := known[0], known[1]
	key := "conversations"
	if conv == nil || isNull(conv) {
		if msgs != nil && !isNull(msgs) {
			key, conv = "messages", msgs
		}
	}
	if conv == nil || isNull(conv) || conv[0] != '[' {
		return Row{}, false
	}
	n := 0
	eachElement(conv, func([]byte) bool { n++; return true })
	if n == 0 {
		return Row{}, false
	}
	row.Messages = make([]Message, 0, n)
	if !eachElement(conv, func(v []byte) bool {
		row.Messages = append(row.Messages, Message{})
		return fastMessage(v, &row.Messages[len(row.Messages)-1])
	}) {
		return Row{}, false
	}
	if checkOrder(row.Messages, key) != nil {
		return Row{}, false
	}

	switch lr := known[2]; {
	case lr != nil && string(lr) == "true":
		row.Label, row.HasLabel = true, true
	case lr != nil && string(lr) == "false":
		row.Label, row.HasLabel = false, true
	case (lr == nil || isNull(lr)) && cfg.MissingLabel != nil:
		row.Label = *cfg.MissingLabel
	default:
		return Row{}, false
	}
	for k, name := range []string{"behavior", "pattern", "category"} {
		br := known[4+k]
		if br == nil || isNull(br) {
			continue
		}
		s, ok := fastString(br)
		if !ok {
			return Row{}, false
		}
		row.Behavior, row.BehaviorField = s, name
		break
	}
	if tr := known[3]; tr != nil && !isNull(tr) {
		if tr[0] != '[' {
			return Row{}, false
		}
		row.Tools = append(json.RawMessage(nil), tr...)
	}
	return row, true
}

// fastKeyIndex numbers the keys parseRow interprets: conversations, messages, label, tools,
// behavior, pattern, category; -1 for any other.
func fastKeyIndex(key []byte) int {
	switch string(key) {
	case "conversations":
		return 0
	case "messages":
		return 1
	case "label":
		return 2
	case "tools":
		return 3
	case "behavior":
		return 4
	case "pattern":
		return 5
	case "category":
		return 6
	}
	return -1
}

// fastMessage is parseMessage on a validated value, for the plain shapes only.
func fastMessage(v []byte, m *Message) bool {
	if v[0] != '{' {
		return false
	}
	var role, content, name, callID, calls []byte
	if !pickMembers(v, []string{"role", "content", "name", "tool_call_id", "tool_calls"}, &role, &content, &name, &callID, &calls) {
		return false
	}
	var ok bool
	if role == nil || isNull(role) {
		return false
	}
	if m.Role, ok = fastString(role); !ok || !knownRoles[m.Role] {
		return false
	}
	if content != nil && !isNull(content) {
		s, ok := fastString(content)
		if !ok {
			return false
		}
		m.Content = &s
	}
	if !fastOptString(name, &m.Name) || !fastOptString(callID, &m.ToolCallID) {
		return false
	}
	if calls != nil && !isNull(calls) {
		if calls[0] != '[' {
			return false
		}
		n := 0
		eachElement(calls, func([]byte) bool { n++; return true })
		if n > 0 && m.Role != "assistant" {
			return false
		}
		if n > 0 {
			m.ToolCalls = make([]ToolCall, 0, n)
			if !eachElement(calls, func(c []byte) bool {
				m.ToolCalls = append(m.ToolCalls, ToolCall{})
				return fastToolCall(c, &m.ToolCalls[len(m.ToolCalls)-1])
			}) {
				return false
			}
		}
	}
	if m.Role == "assistant" {
		return m.Content != nil || len(m.ToolCalls) > 0
	}
	return m.Content != nil
}

// fastToolCall is parseToolCall on a validated value, for the plain shapes only.
func fastToolCall(v []byte, tc *ToolCall) bool {
	if v[0] != '{' {
		return false
	}
	var id, typ, fn []byte
	if !pickMembers(v, []string{"id", "type", "function"}, &id, &typ, &fn) {
		return false
	}
	if !fastOptString(id, &tc.ID) || !fastOptString(typ, &tc.Type) {
		return false
	}
	var ok bool
	if fn == nil || fn[0] != '{' {
		return false
	}
	var name, args []byte
	if !pickMembers(fn, []string{"name", "arguments"}, &name, &args) {
		return false
	}
	if name == nil || isNull(name) {
		return false
	}
	if tc.Name, ok = fastString(name); !ok || strings.TrimSpace(tc.Name) == "" {
		return false
	}
	if args == nil || isNull(args) {
		return false
	}
	switch args[0] {
	case '"':
		s, ok := fastString(args)
		if !ok {
			return false
		}
		a := bytes.TrimSpace([]byte(s))
		if len(a) == 0 || a[0] != '{' || !json.Valid(a) {
			return false
		}
		tc.setArguments(a)
		tc.ArgumentsWasString = true
	case '{':
		tc.setArguments(append(json.RawMessage(nil), args...))
	default:
		return false
	}
	return true
}

// fastOptString is fastString for an optional member: absent (nil) or null leaves s as it is.
func fastOptString(v []byte, s *string) bool {
	if v == nil || isNull(v) {
		return true
	}
	var ok bool
	*s, ok = fastString(v)
	return ok
}

// fastString decodes a validated JSON string value as encoding/json does; false for
// anything else, and for a string that decodes to U+FFFD anywhere (parseRow tells a real
// U+FFFD from a replaced byte or surrogate; this path does not try). The decoder is
// internal/jsonstr's, which refuses (rather than replaces) a lone surrogate.
func fastString(v []byte) (string, bool) {
	s, n, err := jsonstr.Decode(v)
	if err != nil || n != len(v) || strings.Contains(s, "\uFFFD") {
		return "", false
	}
	return s, true
}

// jsonSpace skips JSON whitespace from i.
func jsonSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// jsonEnd returns the index just past the value that starts at b[i], in valid JSON.
func jsonEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				j = stringEnd(b, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return j + 1
				}
			}
		}
		return len(b)
	}
	j := i
	for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\t' && b[j] != '\n' && b[j] != '\r' {
		j++
	}
	return j
}

// stringEnd returns the index just past the string that starts at b[i] == '"', in valid
// JSON: the next quote not escaped by an odd run of backslashes.
func stringEnd(b []byte, i int) int {
	j := i + 1
	for {
		k := bytes.IndexByte(b[j:], '"')
		if k < 0 {
			return len(b)
		}
		j += k
		n := 0
		for p := j - 1; p > i && b[p] == '\\'; p-- {
			n++
		}
		if n%2 == 0 {
			return j + 1
		}
		j++
	}
}

// pickMembers sets *slots[k] to the raw value of the member named names[k] of the valid JSON
// object obj, leaving absent ones nil. It returns false on a duplicate of a picked name
// (encoding/json's last-one-wins path decides those) and on an escaped key, which might
// spell one of the names.
func pickMembers(obj []byte, names []string, slots ...*[]byte) bool {
	return eachMember(obj, func(key, val []byte) bool {
		for k, n := range names {
			if string(key) == n {
				if *slots[k] != nil {
					return false
				}
				*slots[k] = val
				return true
			}
		}
		return bytes.IndexByte(key, '\\') < 0
	})
}

// eachMember calls fn with the raw key (between its quotes) and the value of every member
// of the valid JSON object obj, until fn returns false; it returns fn's last answer.
func eachMember(obj []byte, fn func(key, val []byte) bool) bool {
	i := jsonSpace(obj, 1)
	if obj[i] == '}' {
		return true
	}
	for {
		ke := stringEnd(obj, i)
		key := obj[i+1 : ke-1]
		i = jsonSpace(obj, jsonSpace(obj, ke)+1) // past the colon
		ve := jsonEnd(obj, i)
		if !fn(key, obj[i:ve]) {
			return false
		}
		i = jsonSpace(obj, ve)
		if obj[i] == '}' {
			return true
		}
		i = jsonSpace(obj, i+1) // past the comma
	}
}

// eachElement calls fn with every element of the valid JSON array arr, until fn returns
// false; it returns fn's last answer.
func eachElement(arr []byte, fn func(val []byte) bool) bool {
	i := jsonSpace(arr, 1)
	if arr[i] == ']' {
		return true
	}
	for {
		ve := jsonEnd(arr, i)
		if !fn(arr[i:ve]) {
			return false
		}
		i = jsonSpace(arr, ve)
		if arr[i] == ']' {
			return true
		}
		i = jsonSpace(arr, i+1)
	}
}
