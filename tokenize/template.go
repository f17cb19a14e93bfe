package tokenize

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/ktoloader/ktoloader/internal/pyjson"
	"github.com/ktoloader/ktoloader/loader"
)

// The Mistral v0.3 chat template (shared/tokenizers/mistral-7b-v0.3/chat_template.jinja, the
// one in mistralai/Mistral-7B-Instruct-v0.3's tokenizer_config.json), reimplemented as Go that
// emits segments instead of a string. Rendered with transformers' Jinja settings the template
// produces, for messages [system?] + loop_messages and tools:
//
//	<s>
//	user:        [AVAILABLE_TOOLS] [tools…][/AVAILABLE_TOOLS]   (only before a user message equal to the last one, when tools is not None)
//	             [INST] content[/INST]                          (the LAST message, if a user message: "[INST] " + system + "\n\n" + content + "[/INST]")
//	tool calls:  [TOOL_CALLS] [{"name": …, "arguments": {…}, "id": "…"}, …]</s>
//	assistant:   " " + trim(content) + "</s>"
//	tool:        [TOOL_RESULTS] {"content": <content, raw>, "call_id": "…"}[/TOOL_RESULTS]
//
// with no separators between turns. Before rendering it checks that the messages that are
// neither tool results nor tool calls alternate user/assistant starting with user; while
// rendering it refuses unknown roles (a system message not first is one) and ids whose length
// is not 9. Every such refusal is a *TemplateError wrapping one sentinel below.
//
// Deliberate, documented differences from running the Jinja source:
//   - tool-call arguments are parsed and re-serialized as Python's json.dumps (what vLLM and
//     mistral_common do, and DESIGN.md asks), not double-encoded as a JSON string;
//   - the function object of a call is rendered as {"name", "arguments"} in that order (the
//     loader keeps only these two keys);
//   - an empty tool_calls list counts as none (the template would emit "[TOOL_CALLS] [" and
//     nothing else);
//   - --assistant-text-with-tools=keep (the default) writes " " + trim(text) before
//     [TOOL_CALLS] where an assistant message holds both (the template drops the text);
//   - "message == user_messages[-1]" compares role, content, name, tool_call_id and tool
//     calls, the keys a loader.Message keeps.

// Control token ids of Mistral v0.3 (tokenizer.json added_tokens; the same in tokenizer.model).
const (
	BOSID               int32 = 1 // <s>
	EOSID               int32 = 2 // </s>
	InstID              int32 = 3 // [INST]
	EndInstID           int32 = 4 // [/INST]
	ToolCallsID         int32 = 5 // [TOOL_CALLS]
	AvailableToolsID    int32 = 6 // [AVAILABLE_TOOLS]
	EndAvailableToolsID int32 = 7 // [/AVAILABLE_TOOLS]
	ToolResultsID       int32 = 8 // [TOOL_RESULTS]
	EndToolResultsID    int32 = 9 // [/TOOL_RESULTS]
)

// controlNames spells the control tokens the template uses, indexed by id.
var controlNames = [...]string{
	BOSID: "<s>", EOSID: "</s>", InstID: "[INST]", EndInstID: "[/INST]",
	ToolCallsID: "[TOOL_CALLS]", AvailableToolsID: "[AVAILABLE_TOOLS]",
	EndAvailableToolsID: "[/AVAILABLE_TOOLS]", ToolResultsID: "[TOOL_RESULTS]",
	EndToolResultsID: "[/TOOL_RESULTS]",
}

// ControlName returns the spelling of a control token the template uses ("" for others).
func ControlName(id int32) string {
	if id < 0 || int(id) >= len(controlNames) {
		return ""
	}
	return controlNames[id]
}

const convKey = "conversations"

func msgPath(i int) string { return fmt.Sprintf("%s[%d]", convKey, i) }

// Options configures the rendering. The zero value renders with the defaults.
type Options struct {
	// Tools is a tools list (JSON) for rows without their own `tools` (--tools FILE); a row's
	// own list wins. nil: none.
	Tools json.RawMessage
	// AssistantTextWithTools says what happens to the text of an assistant message that also
	// calls tools: "keep" (the default; "" means keep) renders " " + trim(text) directly before
	// [TOOL_CALLS]; "drop" renders the template exactly, which drops it.
	AssistantTextWithTools string
}

// Validate names the first bad field.
func (o Options) Validate() error {
	switch o.AssistantTextWithTools {
	case "", "keep", "drop":
	default:
		return tmplErr("AssistantTextWithTools", ErrBadOptions, "%q is not keep or drop", o.AssistantTextWithTools)
	}
	if o.Tools != nil {
		v, err := pyjson.Parse(o.Tools)
		if err != nil {
			return tmplErr("Tools", ErrBadOptions, "%v", err)
		}
		if v.Kind != pyjson.Array {
			return tmplErr("Tools", ErrBadOptions, "want a JSON list of tools")
		}
	}
	return nil
}

// Rendering is the training rendering of one row (DESIGN.md "The training rendering").
type Rendering struct {
	// Messages is the conversation as rendered: tool-call ids repaired (see RepairIDs).
	Messages []loader.Message
	// Prompt is the template applied to every message before the final assistant message;
	// it starts with <s>.
	Prompt []Segment
	// PromptAssistant marks, per Prompt segment, the segments of earlier assistant turns.
	PromptAssistant []bool
	// Completion is the final assistant message as the template renders it; it ends with </s>.
	Completion []Segment

	RepairedIDs   int  // tool-call ids made to replace ones the template refuses (see RepairIDs)
	TextWithTools bool // an assistant message holds both non-blank text and tool calls
	// UnpairedResults counts the tool messages whose tool_call_id no earlier call carries:
	// the template renders them, but the model learns a result that answers nothing.
	UnpairedResults int
}

// Renderer renders rows with fixed options and no tokenizer: the template's checks and
// segments only (what validate needs). Safe for concurrent use.
type Renderer struct{ r *renderer }

// NewRenderer returns a Renderer for opt, or opt's first bad field.
func NewRenderer(opt Options) (*Renderer, error) {
	r, err := newRenderer(opt)
	if err != nil {
		return nil, err
	}
	return &Renderer{r: r}, nil
}

// Render renders row as the package function Render does.
func (r *Renderer) Render(row *loader.Row) (*Rendering, error) { return r.r.render(row) }

// Render renders row for training: ids repaired, the whole conversation checked by the
// template's rules, then prompt and completion. Errors are *TemplateError.
func Render(row *loader.Row, opt Options) (*Rendering, error) {
	r, err := newRenderer(opt)
	if err != nil {
		return nil, err
	}
	return r.render(row)
}

// ApplyTemplate renders msgs (and tools, nil for none) exactly as the template would render the
// whole list, ids as given: what apply_chat_template(msgs, tools, tokenize=False) returns, with
// the differences listed in the file comment. It is Render's building block and checks.
func ApplyTemplate(msgs []loader.Message, tools json.RawMessage, opt Options) ([]Segment, error) {
	r, err := newRenderer(opt)
	if err != nil {
		return nil, err
	}
	c, err := r.prepare(msgs, tools)
	if err != nil {
		return nil, err
	}
	var b builder
	if err := c.apply(len(msgs), &b); err != nil {
		return nil, err
	}
	return b.segs, nil
}

// Spell returns segments as text, control tokens spelled out (for reading; never tokenize it).
func Spell(segs []Segment) string {
	var b strings.Builder
	b.Grow(textBytes(segs)) // grown by appends, a 50 MB prompt left ~200 MB of discarded buffers
	for _, s := range segs {
		if s.Control >= 0 {
			b.WriteString(ControlName(s.Control))
		} else {
			b.WriteString(s.Text)
		}
	}
	return b.String()
}

// renderer holds what is shared by every row: the options and the parsed default tools.
type renderer struct {
	keep     bool
	defTools *toolsBlock
}

func newRenderer(opt Options) (*renderer, error) {
	if err := opt.Validate(); err != nil {
		return nil, err
	}
	r := &renderer{keep: opt.AssistantTextWithTools != "drop"}
	if opt.Tools != nil {
		r.defTools = newToolsBlock(opt.Tools, "--tools")
	}
	return r, nil
}

func (r *renderer) render(row *loader.Row) (*Rendering, error) {
	msgs := row.Messages
	n := len(msgs)
	if n == 0 {
		return nil, tmplErr(convKey, loader.ErrEmptyConversation, "no messages")
	}
	if msgs[n-1].Role != "assistant" {
		return nil, tmplErr(msgPath(n-1)+".role", loader.ErrNoFinalAssistant, "the last message is %s", msgs[n-1].Role)
	}
	out := &Rendering{}
	// A tool message without tool_call_id: the template raises ("Tool call IDs should be
	// alphanumeric strings with length 9!"), and an id made up here would pair the result
	// with no call. Refused, not repaired.
	calls := map[string]bool{}
	for i := range msgs {
		m := &msgs[i]
		for j := range m.ToolCalls {
			calls[m.ToolCalls[j].ID] = true
		}
		if !isToolResult(m) {
			continue
		}
		if m.ToolCallID == "" {
			return nil, tmplErr(msgPath(i)+".tool_call_id", ErrToolCallID, "tool message has no tool_call_id")
		}
		if !calls[m.ToolCallID] {
			out.UnpairedResults++
		}
	}
	out.Messages, out.RepairedIDs = RepairIDs(msgs)
	c, err := r.prepare(out.Messages, row.Tools)
	if err != nil {
		return nil, err
	}
	// The whole conversation goes through the template's checks, as ref_render.py does: a row
	// the template cannot render as a conversation is not a training row either.
	if err := c.apply(n, &builder{discard: true}); err != nil {
		return nil, err
	}
	if n == 1 {
		return nil, tmplErr(msgPath(0), ErrEmptyPrompt, "the conversation is only the assistant answer")
	}
	var p builder
	if err := c.apply(n-1, &p); err != nil {
		return nil, err
	}
	out.Prompt, out.PromptAssistant = p.segs, p.asst
	var comp builder
	if err := c.message(n-1, &comp); err != nil {
		return nil, err
	}
	out.Completion = comp.segs
	for i := range out.Messages {
		m := &out.Messages[i]
		if m.Role == "assistant" && len(m.ToolCalls) > 0 && m.Content != nil && pyStrip(*m.Content) != "" {
			out.TextWithTools = true
			break
		}
	}
	return out, nil
}

// conv is one conversation ready to render: arguments serialized, tools chosen.
type conv struct {
	r     *renderer
	msgs  []loader.Message
	calls [][]string // per message, per tool call: `{"name": …, "arguments": …` (tojson minus its "}")
	tools *toolsBlock
}

// prepare serializes every call's function object from the arguments the loader parsed
// (loader.ToolCall.PyArguments; a bad argument is reported before any template check, as
// ref_render.py parses arguments first) and picks the tools.
func (r *renderer) prepare(msgs []loader.Message, rowTools json.RawMessage) (*conv, error) {
	c := &conv{r: r, msgs: msgs, calls: make([][]string, len(msgs)), tools: r.defTools}
	if rowTools != nil {
		c.tools = newToolsBlock(rowTools, "")
	}
	var b strings.Builder
	for i := range msgs {
		m := &msgs[i]
		if len(m.ToolCalls) == 0 {
			continue
		}
		c.calls[i] = make([]string, len(m.ToolCalls))
		for j := range m.ToolCalls {
			tc := &m.ToolCalls[j]
			field := fmt.Sprintf("%s.tool_calls[%d].function.arguments", msgPath(i), j)
			switch err := tc.ArgumentsErr; {
			case errors.Is(err, loader.ErrArgumentsNotObj):
				return nil, tmplErr(field, loader.ErrArgumentsNotObj, "arguments are not a JSON object")
			case err != nil:
				return nil, tmplErr(field, loader.ErrBadArguments, "%v", err)
			case tc.PyArguments == "":
				return nil, tmplErr(field, loader.ErrBadArguments, "arguments were not parsed (loader.ToolCall.WithArguments)")
			}
			b.Reset()
			b.WriteString(`{"name": `)
			pyjson.WriteString(&b, tc.Name)
			b.WriteString(`, "arguments": `)
			b.WriteString(tc.PyArguments)
			c.calls[i][j] = b.String()
		}
	}
	return c, nil
}

// apply renders the first n messages as the template renders a list of n messages.
func (c *conv) apply(n int, b *builder) error {
	msgs := c.msgs[:n]
	if n == 0 {
		// messages[0]["role"] on an empty list: Jinja raises UndefinedError.
		return tmplErr(convKey, ErrEmptyPrompt, "no messages to render")
	}
	first := 0
	if msgs[0].Role == "system" {
		first = 1
	}
	lastUser := -1
	for i := first; i < n; i++ {
		if msgs[i].Role == "user" {
			lastUser = i
		}
	}

	// The alternation check, over messages that are neither tool results nor tool calls.
	k := 0
	for i := first; i < n; i++ {
		m := &msgs[i]
		if isToolResult(m) || len(m.ToolCalls) > 0 {
			continue
		}
		if (m.Role == "user") != (k%2 == 0) {
			want := "user"
			if k%2 == 1 {
				want = "assistant"
			}
			return tmplErr(msgPath(i)+".role", ErrRolesAlternate, "%s where the template expects %s", m.Role, want)
		}
		k++
	}

	b.ctrl(BOSID)
	for i := first; i < n; i++ {
		m := &msgs[i]
		if m.Role == "user" {
			if c.tools != nil && msgEqual(m, &msgs[lastUser]) {
				if err := c.tools.emit(b); err != nil {
					return err
				}
			}
			if m.Content == nil {
				return tmplErr(msgPath(i)+".content", ErrContentNotString, "user content is null")
			}
			b.ctrl(InstID)
			if i == n-1 && first == 1 {
				if msgs[0].Content == nil {
					return tmplErr(msgPath(0)+".content", ErrContentNotString, "system content is null")
				}
				b.text(" ", *msgs[0].Content, "\n\n", *m.Content)
			} else {
				b.text(" ", *m.Content)
			}
			b.ctrl(EndInstID)
			continue
		}
		if err := c.message(i, b); err != nil {
			return err
		}
	}
	return nil
}

// message renders message i when it is not a user message: the branch of the template's loop
// that the completion is made of.
func (c *conv) message(i int, b *builder) error {
	m := &c.msgs[i]
	switch {
	case len(m.ToolCalls) > 0:
		b.cur = m.Role == "assistant"
		defer func() { b.cur = false }()
		if c.r.keep && m.Content != nil {
			if t := pyStrip(*m.Content); t != "" {
				b.text(" ", t)
			}
		}
		b.ctrl(ToolCallsID)
		var s strings.Builder
		s.WriteString(" [")
		for j := range m.ToolCalls {
			if j > 0 {
				s.WriteString(", ")
			}
			id := m.ToolCalls[j].ID
			if utf8.RuneCountInString(id) != IDLength {
				return tmplErr(fmt.Sprintf("%s.tool_calls[%d].id", msgPath(i), j), ErrToolCallID, "%q has length %d", id, utf8.RuneCountInString(id))
			}
			s.WriteString(c.calls[i][j])
			s.WriteString(`, "id": "`)
			s.WriteString(id)
			s.WriteString(`"}`)
		}
		s.WriteString("]")
		b.text(s.String())
		b.ctrl(EOSID)
	case m.Role == "assistant":
		b.cur = true
		// content|trim: a null content renders as "None" (Jinja's soft_str).
		content := "None"
		if m.Content != nil {
			content = *m.Content
		}
		b.text(" ", pyStrip(content))
		b.ctrl(EOSID)
		b.cur = false
	case isToolResult(m):
		// content|string: inserted raw, not JSON-quoted; null renders as "None".
		content := "None"
		if m.Content != nil {
			content = *m.Content
		}
		if utf8.RuneCountInString(m.ToolCallID) != IDLength {
			return tmplErr(msgPath(i)+".tool_call_id", ErrToolCallID, "%q has length %d", m.ToolCallID, utf8.RuneCountInString(m.ToolCallID))
		}
		b.ctrl(ToolResultsID)
		b.text(` {"content": `, content, `, "call_id": "`, m.ToolCallID, `"}`)
		b.ctrl(EndToolResultsID)
	default:
		return tmplErr(msgPath(i)+".role", ErrUnsupportedRole, "role %q", m.Role)
	}
	return nil
}

func isToolResult(m *loader.Message) bool { return m.Role == "tool" || m.Role == "tool_results" }

// msgEqual stands in for Python's dict equality of two messages.
func msgEqual(a, b *loader.Message) bool {
	if a == b {
		return true
	}
	if a.Role != b.Role || a.Name != b.Name || a.ToolCallID != b.ToolCallID ||
		(a.Content == nil) != (b.Content == nil) || (a.Content != nil && *a.Content != *b.Content) ||
		len(a.ToolCalls) != len(b.ToolCalls) {
		return false
	}
	for j := range a.ToolCalls {
		x, y := &a.ToolCalls[j], &b.ToolCalls[j]
		if x.ID != y.ID || x.Type != y.Type || x.Name != y.Name || string(x.Arguments) != string(y.Arguments) {
			return false
		}
	}
	return true
}

// toolsBlock is the text between [AVAILABLE_TOOLS] and [/AVAILABLE_TOOLS], rendered once. The
// template raises on a bad tools list only where it emits it, so the error waits for emit.
// Read-only after newToolsBlock: a renderer's default block is shared by goroutines.
type toolsBlock struct {
	text string
	err  error
}

// newToolsBlock renders raw; from names where it came from in errors ("--tools", or "" for
// the row's own list).
func newToolsBlock(raw json.RawMessage, from string) *toolsBlock {
	t := &toolsBlock{}
	t.text, t.err = renderTools(raw, from)
	return t
}

func (t *toolsBlock) emit(b *builder) error {
	if t.err != nil {
		return t.err
	}
	b.ctrl(AvailableToolsID)
	b.text(t.text)
	b.ctrl(EndAvailableToolsID)
	return nil
}

// renderTools renders " [" + each tool + "]" as the template's tools loop does.
func renderTools(raw json.RawMessage, from string) (string, error) {
	bad := func(field, format string, args ...any) error {
		detail := fmt.Sprintf(format, args...)
		if from != "" {
			detail += " (in " + from + ")"
		}
		return &TemplateError{Field: field, Err: ErrBadTools, Detail: detail}
	}
	v, err := pyjson.Parse(raw)
	if err != nil {
		return "", bad("tools", "%v", err)
	}
	if v.Kind != pyjson.Array {
		return "", bad("tools", "not a list")
	}
	var b strings.Builder
	b.WriteString(" [")
	for k := range v.Items {
		fn, ok := v.Items[k].Field("function")
		if !ok || fn.Kind != pyjson.Object {
			return "", bad(fmt.Sprintf("tools[%d].function", k), "each tool needs a \"function\" object")
		}
		b.WriteString(`{"type": "function", "function": {`)
		sep := false
		for i, key := range fn.Keys {
			if key == "return" {
				continue
			}
			if sep {
				b.WriteString(", ")
			}
			sep = true
			val := &fn.Items[i]
			// The template concatenates keys and string values unescaped, and tojson's the rest.
			b.WriteString(`"` + key + `": `)
			if val.Kind == pyjson.String {
				b.WriteString(`"` + val.Text + `"`)
			} else {
				val.Write(&b)
			}
		}
		b.WriteString("}}")
		if k < len(v.Items)-1 {
			b.WriteString(", ")
		} else {
			b.WriteString("]")
		}
	}
	return b.String(), nil
}

// builder collects segments, joining adjacent text (the tokenizer sees the text between two
// control tokens as one piece, and encode(a+b) is not encode(a)+encode(b)).
type builder struct {
	segs    []Segment
	asst    []bool // per segment: part of an assistant turn
	cur     bool   // whether segments added now belong to an assistant turn
	discard bool   // only run the checks
}

func (b *builder) ctrl(id int32) {
	if b.discard {
		return
	}
	b.segs = append(b.segs, Segment{Control: id})
	b.asst = append(b.asst, b.cur)
}

// text adds the concatenation of parts; a discarding builder (checks only) never builds it,
// which for a tool result of megabytes is a copy saved.
func (b *builder) text(parts ...string) {
	if b.discard {
		return
	}
	s := strings.Join(parts, "")
	if s == "" {
		return
	}
	if n := len(b.segs); n > 0 && b.segs[n-1].Control < 0 && b.asst[n-1] == b.cur {
		b.segs[n-1].Text += s
		return
	}
	b.segs = append(b.segs, Segment{Control: -1, Text: s})
	b.asst = append(b.asst, b.cur)
}

// pyStrip is Python's str.strip() (Jinja's trim filter): Unicode White_Space plus the
// separators U+001C..U+001F, which Python's str.isspace also counts.
func pyStrip(s string) string {
	return strings.TrimFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || (r >= 0x1c && r <= 0x1f)
	})
}
