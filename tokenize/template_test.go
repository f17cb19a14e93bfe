package tokenize

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/ktoloader/ktoloader/internal/shared"
	"github.com/ktoloader/ktoloader/loader"
)

// chatGolden is shared/refs/chat_template_golden.json: the real template rendered by Jinja2
// with transformers' settings, and the ids Hugging Face tokenizers gives for that text.
type chatGolden struct {
	Cases []struct {
		Name       string            `json:"name"`
		Messages   []json.RawMessage `json:"messages"`
		Tools      json.RawMessage   `json:"tools"`
		Rendered   string            `json:"rendered"`
		IDs        []int32           `json:"ids"`
		ArgsParsed *struct {
			Rendered string  `json:"rendered"`
			IDs      []int32 `json:"ids"`
		} `json:"args_parsed"`
	} `json:"cases"`
	ErrorCases []struct {
		Name         string            `json:"name"`
		Messages     []json.RawMessage `json:"messages"`
		Tools        json.RawMessage   `json:"tools"`
		ErrorType    string            `json:"error_type"`
		ErrorMessage string            `json:"error_message"`
		ByRaise      bool              `json:"raised_by_template_raise_exception"`
	} `json:"error_cases"`
}

func loadChatGolden(t *testing.T) *chatGolden {
	t.Helper()
	data, err := os.ReadFile(shared.Path(t, "refs", "chat_template_golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g chatGolden
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatal(err)
	}
	if len(g.Cases) == 0 || len(g.ErrorCases) == 0 {
		t.Fatal("golden file has no cases")
	}
	return &g
}

// goldenMessages turns OpenAI-format messages into loader.Messages directly, keeping what the
// loader would refuse (a null assistant content, unknown roles) so the template's own rules
// are what is tested. A content that is neither a string nor null (a list of parts) becomes
// nil: for the template both are "not a string" (the loader joins text parts instead).
func goldenMessages(t *testing.T, raw []json.RawMessage) []loader.Message {
	t.Helper()
	out := make([]loader.Message, len(raw))
	for i, r := range raw {
		var m struct {
			Role       string          `json:"role"`
			Content    json.RawMessage `json:"content"`
			Name       string          `json:"name"`
			ToolCallID string          `json:"tool_call_id"`
			ToolCalls  []struct {
				ID       string `json:"id"`
				Type     string `json:"type"`
				Function struct {
					Name      string          `json:"name"`
					Arguments json.RawMessage `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		}
		if err := json.Unmarshal(r, &m); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		msg := loader.Message{Role: m.Role, Name: m.Name, ToolCallID: m.ToolCallID}
		var s string
		if json.Unmarshal(m.Content, &s) == nil && len(m.Content) > 0 && m.Content[0] == '"' {
			msg.Content = &s
		}
		for _, c := range m.ToolCalls {
			tc := loader.ToolCall{ID: c.ID, Type: c.Type, Name: c.Function.Name}.WithArguments(c.Function.Arguments)
			var args string
			if json.Unmarshal(c.Function.Arguments, &args) == nil {
				tc = tc.WithArguments(json.RawMessage(args))
				tc.ArgumentsWasString = true
			}
			msg.ToolCalls = append(msg.ToolCalls, tc)
		}
		out[i] = msg
	}
	return out
}

func nullToNil(raw json.RawMessage) json.RawMessage {
	if strings.TrimSpace(string(raw)) == "null" || len(raw) == 0 {
		return nil
	}
	return raw
}

// TestGoldenRendering renders every golden conversation whole, the template exactly (drop),
// and compares with Jinja's text. Arguments are always parsed (DESIGN.md), so cases with
// string arguments compare with the goldens' args_parsed rendering.
func TestGoldenRendering(t *testing.T) {
	g := loadChatGolden(t)
	for _, c := range g.Cases {
		t.Run(c.Name, func(t *testing.T) {
			want := c.Rendered
			if c.ArgsParsed != nil {
				want = c.ArgsParsed.Rendered
			}
			segs, err := ApplyTemplate(goldenMessages(t, c.Messages), nullToNil(c.Tools), Options{AssistantTextWithTools: "drop"})
			if err != nil {
				t.Fatalf("ApplyTemplate: %v", err)
			}
			if got := Spell(segs); got != want {
				t.Errorf("rendering differs from Jinja\n got %q\nwant %q", got, want)
			}
			checkSegments(t, segs)
		})
	}
}

// checkSegments asserts the segment invariants the tokenizer relies on: starts with <s>, no
// two adjacent text segments, no empty text, text never spells a control token it was not given.
func checkSegments(t *testing.T, segs []Segment) {
	t.Helper()
	if len(segs) == 0 || segs[0].Control != BOSID {
		t.Errorf("segments do not start with <s>: %+v", segs)
		return
	}
	for i, s := range segs {
		if s.Control < 0 && s.Text == "" {
			t.Errorf("segment %d: empty text", i)
		}
		if i > 0 && s.Control < 0 && segs[i-1].Control < 0 {
			t.Errorf("segments %d and %d are both text: the tokenizer would split what HF sees as one piece", i-1, i)
		}
	}
}

// expectedFields says where each golden error case goes wrong. Every error case of the golden
// file must be listed, so a new one is noticed.
var expectedFields = map[string]string{
	"two_users":                      "conversations[1].role",
	"starts_with_assistant":          "conversations[0].role",
	"two_assistants":                 "conversations[2].role",
	"user_after_tool_result":         "conversations[3].role",
	"system_not_first":               "conversations[1].role",
	"unknown_role":                   "conversations[0].role",
	"openai_style_call_id":           "conversations[1].tool_calls[0].id",
	"tool_call_missing_id":           "conversations[1].tool_calls[0].id",
	"tool_message_missing_id":        "conversations[2].tool_call_id",
	"tool_message_bad_id":            "conversations[2].tool_call_id",
	"tools_without_function_wrapper": "tools[0].function",
	"content_parts_list":             "conversations[0].content",
}

// TestGoldenErrors: every golden error case fails with the sentinel that names the
// template's own message (for raise_exception errors) or the Python error it hits.
func TestGoldenErrors(t *testing.T) {
	g := loadChatGolden(t)
	raised := []error{ErrRolesAlternate, ErrUnsupportedRole, ErrToolCallID}
	for _, c := range g.ErrorCases {
		t.Run(c.Name, func(t *testing.T) {
			var want error
			if c.ByRaise {
				for _, s := range raised {
					if strings.Contains(strings.ToLower(c.ErrorMessage), s.Error()) {
						want = s
					}
				}
			} else {
				switch c.ErrorType {
				case "UndefinedError": // 'dict object' has no attribute 'function'
					want = ErrBadTools
				case "TypeError": // can only concatenate str (not "list") to str
					want = ErrContentNotString
				}
			}
			if want == nil {
				t.Fatalf("no sentinel for %s %q", c.ErrorType, c.ErrorMessage)
			}
			_, err := ApplyTemplate(goldenMessages(t, c.Messages), nullToNil(c.Tools), Options{})
			if !errors.Is(err, want) {
				t.Fatalf("err = %v, want %v", err, want)
			}
			var te *TemplateError
			if !errors.As(err, &te) {
				t.Fatalf("err %T is not a *TemplateError", err)
			}
			field, ok := expectedFields[c.Name]
			if !ok {
				t.Fatalf("new golden error case: add its field to expectedFields (got %q)", te.Field)
			}
			if te.Field != field {
				t.Errorf("Field = %q, want %q", te.Field, field)
			}
			if r := Reason(err); r == "" || r == "error" || r != te.Reason() || r != loader.Reason(err) {
				t.Errorf("Reason = %q, TemplateError.Reason = %q, loader.Reason = %q", r, te.Reason(), loader.Reason(err))
			}
		})
	}
}

func TestReasonsDistinct(t *testing.T) {
	seen := map[string]error{}
	for s, name := range reasonNames {
		if other, dup := seen[name]; dup {
			t.Errorf("reason %q used by %v and %v", name, s, other)
		}
		seen[name] = s
		if Reason(&TemplateError{Field: "x", Err: s}) != name {
			t.Errorf("Reason of %v = %q, want %q", s, Reason(&TemplateError{Err: s}), name)
		}
	}
	if r := Reason(&TemplateError{Err: loader.ErrBadArguments}); r != "bad_arguments" {
		t.Errorf("a wrapped loader sentinel gives %q, want the loader's name bad_arguments", r)
	}
}

// refRenderRows and their expected renderings: the prompts and completions were produced by
// /usr/bin/python3 ../shared/tools/ref_render.py (Jinja2 3.1.2, the real template) with
// --assistant-text-with-tools keep and drop, run by hand once and pasted here.
var refRenderRows = []struct {
	name, row          string
	prompt, keep, drop string // keep/drop: the completions
	keepPrompt         string // the prompt with keep, when it differs
}{
	{
		name:   "system folded into the last user message",
		row:    `{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Ping?"}, {"role": "assistant", "content": "  Pong.\n"}]}`,
		prompt: "<s>[INST] Be brief.\n\nPing?[/INST]",
		keep:   " Pong.</s>", drop: " Pong.</s>",
	},
	{
		name:   "system dropped when the prompt ends with a tool result; tools; Python numbers",
		row:    `{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}, {"role": "assistant", "content": null, "tool_calls": [{"id": "abcDEF123", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"n\": 1e3, \"big\": 9007199254740993}"}}]}, {"role": "tool", "tool_call_id": "abcDEF123", "content": "{\"t\": 22}"}, {"role": "assistant", "content": "It is 22°C."}], "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Get \"the\" weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]}`,
		prompt: "<s>[AVAILABLE_TOOLS] [{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Get \"the\" weather\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}}}}][/AVAILABLE_TOOLS][INST] Weather in Paris?[/INST][TOOL_CALLS] [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"n\": 1000.0, \"big\": 9007199254740993}, \"id\": \"abcDEF123\"}]</s>[TOOL_RESULTS] {\"content\": {\"t\": 22}, \"call_id\": \"abcDEF123\"}[/TOOL_RESULTS]",
		keep:   " It is 22°C.</s>", drop: " It is 22°C.</s>",
	},
	{
		name:   "final answer with text and two tool calls; a literal [INST] in user text",
		row:    `{"messages": [{"role": "user", "content": "Look up [INST] now"}, {"role": "assistant", "content": "  Let me check. ", "tool_calls": [{"id": "x1y2z3w4v", "type": "function", "function": {"name": "search", "arguments": "{\"q\": \"é\\n\", \"k\": [1, 2.50, -0.0]}"}}, {"id": "a1b2c3d4e", "type": "function", "function": {"name": "search", "arguments": "{}"}}]}]}`,
		prompt: "<s>[INST] Look up [INST] now[/INST]",
		keep:   " Let me check.[TOOL_CALLS] [{\"name\": \"search\", \"arguments\": {\"q\": \"é\\n\", \"k\": [1, 2.5, -0.0]}, \"id\": \"x1y2z3w4v\"}, {\"name\": \"search\", \"arguments\": {}, \"id\": \"a1b2c3d4e\"}]</s>",
		drop:   "[TOOL_CALLS] [{\"name\": \"search\", \"arguments\": {\"q\": \"é\\n\", \"k\": [1, 2.5, -0.0]}, \"id\": \"x1y2z3w4v\"}, {\"name\": \"search\", \"arguments\": {}, \"id\": \"a1b2c3d4e\"}]</s>",
	},
	{
		name:       "text with tool calls in the history; blank final answer",
		row:        `{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Sure.", "tool_calls": [{"id": "x1y2z3w4v", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]}, {"role": "tool", "tool_call_id": "x1y2z3w4v", "content": "ok"}, {"role": "assistant", "content": "Done."}, {"role": "user", "content": "again"}, {"role": "assistant", "content": "\t"}]}`,
		keepPrompt: "<s>[INST] hi[/INST] Sure.[TOOL_CALLS] [{\"name\": \"f\", \"arguments\": {\"a\": 1}, \"id\": \"x1y2z3w4v\"}]</s>[TOOL_RESULTS] {\"content\": ok, \"call_id\": \"x1y2z3w4v\"}[/TOOL_RESULTS] Done.</s>[INST] again[/INST]",
		prompt:     "<s>[INST] hi[/INST][TOOL_CALLS] [{\"name\": \"f\", \"arguments\": {\"a\": 1}, \"id\": \"x1y2z3w4v\"}]</s>[TOOL_RESULTS] {\"content\": ok, \"call_id\": \"x1y2z3w4v\"}[/TOOL_RESULTS] Done.</s>[INST] again[/INST]",
		keep:       " </s>", drop: " </s>",
	},
	{
		name:   "empty tools list; tools before every user message equal to the last",
		row:    `{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello again"}], "tools": []}`,
		prompt: "<s>[AVAILABLE_TOOLS] [[/AVAILABLE_TOOLS][INST] hi[/INST] hello</s>[AVAILABLE_TOOLS] [[/AVAILABLE_TOOLS][INST] hi[/INST]",
		keep:   " hello again</s>", drop: " hello again</s>",
	},
}

func parseTestRow(t *testing.T, line string) loader.Row {
	t.Helper()
	row, err := loader.ParseRow([]byte(line), "test.jsonl", 1, loader.Config{MissingLabel: new(bool)})
	if err != nil {
		t.Fatalf("ParseRow: %v", err)
	}
	return row
}

func TestRenderMatchesRefRender(t *testing.T) {
	for _, c := range refRenderRows {
		t.Run(c.name, func(t *testing.T) {
			row := parseTestRow(t, c.row)
			for _, mode := range []string{"keep", "drop"} {
				r, err := Render(&row, Options{AssistantTextWithTools: mode})
				if err != nil {
					t.Fatalf("%s: Render: %v", mode, err)
				}
				wantPrompt, wantComp := c.prompt, c.drop
				if mode == "keep" {
					wantComp = c.keep
					if c.keepPrompt != "" {
						wantPrompt = c.keepPrompt
					}
				}
				if got := Spell(r.Prompt); got != wantPrompt {
					t.Errorf("%s: prompt\n got %q\nwant %q", mode, got, wantPrompt)
				}
				if got := Spell(r.Completion); got != wantComp {
					t.Errorf("%s: completion\n got %q\nwant %q", mode, got, wantComp)
				}
				checkSegments(t, r.Prompt)
				if len(r.PromptAssistant) != len(r.Prompt) {
					t.Errorf("PromptAssistant has %d entries for %d segments", len(r.PromptAssistant), len(r.Prompt))
				}
			}
		})
	}
}

// TestRenderLiteralControlText: text that spells a control token stays text.
func TestRenderLiteralControlText(t *testing.T) {
	row := parseTestRow(t, refRenderRows[2].row)
	r, err := Render(&row, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []Segment{{Control: BOSID}, {Control: InstID}, {Control: -1, Text: " Look up [INST] now"}, {Control: EndInstID}}
	if len(r.Prompt) != len(want) {
		t.Fatalf("prompt segments = %+v, want %+v", r.Prompt, want)
	}
	for i := range want {
		if r.Prompt[i] != want[i] {
			t.Errorf("segment %d = %+v, want %+v", i, r.Prompt[i], want[i])
		}
	}
}

func TestRenderStats(t *testing.T) {
	row := parseTestRow(t, `{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " ", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}, {"role": "tool", "tool_call_id": "call_1", "content": "r"}, {"role": "assistant", "content": "a"}]}`)
	r, err := Render(&row, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.RepairedIDs != 1 {
		t.Errorf("RepairedIDs = %d, want 1 (the call; its result follows it)", r.RepairedIDs)
	}
	if r.TextWithTools {
		t.Errorf("blank text with tool calls counted as text with tools")
	}
	id := r.Messages[1].ToolCalls[0].ID
	if !ValidToolCallID(id) || r.Messages[2].ToolCallID != id {
		t.Errorf("repaired messages: call id %q, result id %q", id, r.Messages[2].ToolCallID)
	}
	if row.Messages[1].ToolCalls[0].ID != "call_1" {
		t.Errorf("Render modified the row")
	}
	if !strings.Contains(Spell(r.Prompt), `"id": "`+id+`"`) {
		t.Errorf("prompt does not use the repaired id: %q", Spell(r.Prompt))
	}

	row2 := parseTestRow(t, refRenderRows[3].row)
	r2, err := Render(&row2, Options{AssistantTextWithTools: "drop"})
	if err != nil {
		t.Fatal(err)
	}
	if !r2.TextWithTools {
		t.Errorf("TextWithTools not set with drop")
	}
}

func TestRenderErrors(t *testing.T) {
	cases := []struct {
		name  string
		msgs  []loader.Message
		tools string
		want  error
		field string
	}{
		{"no messages", nil, "", loader.ErrEmptyConversation, "conversations"},
		{"ends with user", []loader.Message{{Role: "user", Content: str("q")}}, "", loader.ErrNoFinalAssistant, "conversations[0].role"},
		{"only a tool-call answer", []loader.Message{callMsg(call("abcDEF123", "f"))}, "", ErrEmptyPrompt, "conversations[0]"},
		{"folded system content null", []loader.Message{{Role: "system"}, {Role: "user", Content: str("q")}, {Role: "assistant", Content: str("a")}}, "", ErrContentNotString, "conversations[0].content"},
		{"bad arguments", []loader.Message{{Role: "user", Content: str("q")}, {Role: "assistant", ToolCalls: []loader.ToolCall{loader.ToolCall{ID: "abcDEF123", Name: "f"}.WithArguments([]byte(`{"a": NaN}`))}}}, "", loader.ErrBadArguments, "conversations[1].tool_calls[0].function.arguments"},
		{"arguments not an object", []loader.Message{{Role: "user", Content: str("q")}, {Role: "assistant", ToolCalls: []loader.ToolCall{loader.ToolCall{ID: "abcDEF123", Name: "f"}.WithArguments([]byte(`[1]`))}}}, "", loader.ErrArgumentsNotObj, "conversations[1].tool_calls[0].function.arguments"},
		{"tools not a list", []loader.Message{{Role: "user", Content: str("q")}, {Role: "assistant", Content: str("a")}}, `{"function": {}}`, ErrBadTools, "tools"},
		{"tool function a string", []loader.Message{{Role: "user", Content: str("q")}, {Role: "assistant", Content: str("a")}}, `[{"function": "f"}]`, ErrBadTools, "tools[0].function"},
		{"unknown role in history", []loader.Message{{Role: "user", Content: str("q")}, {Role: "developer", Content: str("d")}, {Role: "user", Content: str("q")}, {Role: "assistant", Content: str("a")}}, "", ErrUnsupportedRole, "conversations[1].role"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			row := loader.Row{Source: loader.Source{File: "x", Line: 1}, Messages: c.msgs}
			if c.tools != "" {
				row.Tools = json.RawMessage(c.tools)
			}
			_, err := Render(&row, Options{})
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			var te *TemplateError
			if !errors.As(err, &te) || te.Field != c.field {
				t.Errorf("err = %#v, want Field %q", err, c.field)
			}
		})
	}
}

func TestOptions(t *testing.T) {
	if _, err := Render(&loader.Row{}, Options{AssistantTextWithTools: "maybe"}); !errors.Is(err, ErrBadOptions) {
		t.Errorf("bad mode: err = %v", err)
	}
	if _, err := Render(&loader.Row{}, Options{Tools: json.RawMessage(`{"a": 1}`)}); !errors.Is(err, ErrBadOptions) {
		t.Errorf("tools not a list: err = %v", err)
	}
	// Row tools win over Options.Tools.
	row := parseTestRow(t, `{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "tools": [{"type": "function", "function": {"name": "row"}}]}`)
	r, err := Render(&row, Options{Tools: json.RawMessage(`[{"type": "function", "function": {"name": "file"}}]`)})
	if err != nil {
		t.Fatal(err)
	}
	if got := Spell(r.Prompt); !strings.Contains(got, `"name": "row"`) || strings.Contains(got, "file") {
		t.Errorf("row tools did not win: %q", got)
	}
	row.Tools = nil
	r, err = Render(&row, Options{Tools: json.RawMessage(`[{"type": "function", "function": {"name": "file"}}]`)})
	if err != nil {
		t.Fatal(err)
	}
	if got := Spell(r.Prompt); !strings.Contains(got, `"name": "file"`) {
		t.Errorf("--tools not used: %q", got)
	}
}
