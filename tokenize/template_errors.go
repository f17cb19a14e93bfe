package tokenize

import (
	"errors"
	"fmt"

	"github.com/ktoloader/ktoloader/loader"
)

// The template's errors: the reasons it refuses a row for, and the error that names the
// field. template.go renders; this file says why it would not.

// Sentinel reasons of template errors. Each *TemplateError wraps exactly one of these, or a
// loader sentinel where the meaning is the same (loader.ErrNoFinalAssistant,
// loader.ErrBadArguments, loader.ErrArgumentsNotObj), so the two stages count alike.
var (
	// ErrRolesAlternate: after the optional system message, the messages that are neither tool
	// results nor tool calls must go user, assistant, user, … (the template's first check).
	ErrRolesAlternate = errors.New("conversation roles must alternate user/assistant/user/assistant/...")
	// ErrUnsupportedRole: a role other than user, assistant, tool and tool_results after the
	// first message (a system message anywhere but first is one).
	ErrUnsupportedRole = errors.New("only user and assistant roles are supported, with the exception of an initial optional system message")
	// ErrToolCallID: a tool call or tool message without an id of length 9.
	ErrToolCallID = errors.New("tool call ids should be alphanumeric strings with length 9")
	// ErrBadTools: the tools list is not a list of {"function": {…}} objects.
	ErrBadTools = errors.New("tools must be a list of {\"type\": \"function\", \"function\": {...}} objects")
	// ErrContentNotString: a content the template concatenates is null (a user message's, or
	// the system message's when it is folded into the last user message).
	ErrContentNotString = errors.New("content must be a string")
	// ErrEmptyPrompt: nothing precedes the final assistant message (the template cannot
	// render an empty conversation).
	ErrEmptyPrompt = errors.New("no message before the final assistant message")
	// ErrBadOptions: Options holds a value Render does not know.
	ErrBadOptions = errors.New("bad rendering options")
)

var reasonNames = map[error]string{
	ErrRolesAlternate:   "roles_not_alternating",
	ErrUnsupportedRole:  "unsupported_role",
	ErrToolCallID:       "bad_tool_call_id",
	ErrBadTools:         "bad_tools",
	ErrContentNotString: "content_not_string",
	ErrEmptyPrompt:      "empty_prompt",
	ErrBadOptions:       "bad_options",
}

// Reason returns the stable snake_case reason of an error from this package or the loader
// (what rejects.jsonl and the manifest count), or "error" when it has none.
func Reason(err error) string {
	for s, name := range reasonNames {
		if errors.Is(err, s) {
			return name
		}
	}
	return loader.Reason(err)
}

// TemplateError is a row the template refuses: where (Field, a JSON path such as
// conversations[3].tool_calls[0].id) and why (Err, a sentinel).
type TemplateError struct {
	Field  string
	Err    error
	Detail string
}

func (e *TemplateError) Error() string {
	s := e.Err.Error()
	if e.Field != "" {
		s = e.Field + ": " + s
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

func (e *TemplateError) Unwrap() error { return e.Err }

// Reason is the stable reason name of the wrapped sentinel (loader.Reasoner).
func (e *TemplateError) Reason() string { return Reason(e.Err) }

func tmplErr(field string, err error, format string, args ...any) *TemplateError {
	return &TemplateError{Field: field, Err: err, Detail: fmt.Sprintf(format, args...)}
}

// convKey is the name used in field paths. loader.Row does not record whether the row said
// "conversations" or its alias "messages"; DESIGN.md names paths after the former.
