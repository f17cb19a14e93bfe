package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ktoloader/ktoloader/internal/shared"
)

// demoTokenizer is the project's own small tokenizer (Mistral's control tokens at Mistral's
// ids), so these tests run without ../shared.
const demoTokenizer = "../../testdata/demo-tokenizer"

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// decodeLines parses JSONL output, each line as an ordered list of top-level keys and values.
func decodeLines(t *testing.T, out string) []map[string]json.RawMessage {
	t.Helper()
	var lines []map[string]json.RawMessage
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("output line is not a JSON object: %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	return lines
}

func keysOf(m map[string]json.RawMessage) []string {
	var k []string
	for key := range m {
		k = append(k, key)
	}
	slices.Sort(k)
	return k
}

const (
	rowWithCalls = `{"conversations": [{"role": "system", "content": "sys"}, {"role": "user", "content": "Find it"}, {"role": "assistant", "content": "Looking.", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "search", "arguments": "{\"z\": 1e3, \"a\": [true, null]}"}}]}, {"role": "tool", "tool_call_id": "call_1", "content": "found"}, {"role": "assistant", "content": "Here it is."}], "label": false, "behavior": "b1"}`
	rowBadJSON   = `{"conversations": [`
	rowAlternate = `{"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": null, "tool_calls": [{"id": "abcDEF123", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}, {"role": "tool", "tool_call_id": "abcDEF123", "content": "r"}, {"role": "user", "content": "thanks"}, {"role": "assistant", "content": "ok"}], "label": true}`
)

func TestRenderLines(t *testing.T) {
	in := writeFile(t, "rows.jsonl", rowWithCalls+"\n"+rowBadJSON+"\n"+rowAlternate+"\n")
	out, code := runOutCmd(t, "render", "--tokenizer", demoTokenizer, "--input", in)
	if code != 0 {
		t.Fatalf("exit %d, output %q", code, out)
	}
	lines := decodeLines(t, out)
	if len(lines) != 3 {
		t.Fatalf("%d output lines for 3 rows: %q", len(lines), out)
	}

	ok := lines[0]
	if got, want := keysOf(ok), []string{"behavior", "completion", "completion_ids", "label", "messages", "prompt", "prompt_ids", "source"}; !slices.Equal(got, want) {
		t.Errorf("keys %v, want %v", got, want)
	}
	var r struct {
		Source   string `json:"source"`
		Messages []struct {
			Role       string  `json:"role"`
			Content    *string `json:"content"`
			ToolCallID string  `json:"tool_call_id"`
			ToolCalls  []struct {
				ID       string `json:"id"`
				Function struct {
					Name      string          `json:"name"`
					Arguments json.RawMessage `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"messages"`
		Prompt        string  `json:"prompt"`
		Completion    string  `json:"completion"`
		PromptIDs     []int32 `json:"prompt_ids"`
		CompletionIDs []int32 `json:"completion_ids"`
		Label         bool    `json:"label"`
		Behavior      string  `json:"behavior"`
	}
	line0, _ := json.Marshal(ok)
	if err := json.Unmarshal(line0, &r); err != nil {
		t.Fatal(err)
	}
	if r.Source != in+":1" || r.Label || r.Behavior != "b1" {
		t.Errorf("source/label/behavior = %q/%v/%q", r.Source, r.Label, r.Behavior)
	}
	if len(r.Messages) != 5 || len(r.Messages[2].ToolCalls) != 1 {
		t.Fatalf("messages: %+v", r.Messages)
	}
	id := r.Messages[2].ToolCalls[0].ID
	if len(id) != 9 || id == "call_1" || r.Messages[3].ToolCallID != id {
		t.Errorf("tool-call id %q, tool message id %q: want one repaired 9-character id", id, r.Messages[3].ToolCallID)
	}
	if got := string(r.Messages[2].ToolCalls[0].Function.Arguments); got != `{"z":1e3,"a":[true,null]}` {
		t.Errorf("arguments = %s, want the object with its keys in order", got)
	}
	// The system message is dropped: the prompt ends with a tool result (as at inference).
	wantPrompt := `<s>[INST] Find it[/INST] Looking.[TOOL_CALLS] [{"name": "search", "arguments": {"z": 1000.0, "a": [true, null]}, "id": "` + id + `"}]</s>[TOOL_RESULTS] {"content": found, "call_id": "` + id + `"}[/TOOL_RESULTS]`
	if r.Prompt != wantPrompt || r.Completion != " Here it is.</s>" {
		t.Errorf("prompt %q\ncompletion %q", r.Prompt, r.Completion)
	}
	if len(r.PromptIDs) < 2 || r.PromptIDs[0] != 1 || r.PromptIDs[1] != 3 || r.CompletionIDs[len(r.CompletionIDs)-1] != 2 {
		t.Errorf("prompt_ids %v, completion_ids %v: want <s> [INST] … and … </s>", r.PromptIDs, r.CompletionIDs)
	}

	for i, want := range []string{
		`{"source":"` + in + `:2","error":{"field":"","reason":"invalid_json"}}`,
		`{"source":"` + in + `:3","error":{"field":"conversations[3].role","reason":"roles_not_alternating"}}`,
	} {
		got, _ := json.Marshal(lines[i+1])
		var w map[string]json.RawMessage
		json.Unmarshal([]byte(want), &w)
		wb, _ := json.Marshal(w)
		if string(got) != string(wb) {
			t.Errorf("line %d = %s, want %s", i+2, got, wb)
		}
	}
}

func TestRenderTextWithTools(t *testing.T) {
	// rowWithCalls cut after the assistant message with text and a tool call.
	in := writeFile(t, "final.jsonl", strings.Replace(rowWithCalls, `}]}, {"role": "tool", "tool_call_id": "call_1", "content": "found"}, {"role": "assistant", "content": "Here it is."}]`, `}]}]`, 1)+"\n")
	completion := func(mode string) string {
		out, code := runOutCmd(t, "render", "--tokenizer", demoTokenizer, "--input", in, "--assistant-text-with-tools", mode)
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", mode, code, out)
		}
		var r struct{ Completion string }
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("%s: %v: %s", mode, err, out)
		}
		return r.Completion
	}
	keep, drop := completion("keep"), completion("drop")
	if !strings.HasPrefix(keep, " Looking.[TOOL_CALLS] [") || !strings.HasPrefix(drop, "[TOOL_CALLS] [") || keep[len(" Looking."):] != drop {
		t.Errorf("keep %q\ndrop %q", keep, drop)
	}
}

// TestRenderGoldenIDs: the ids render prints equal Hugging Face tokenizers' ids in the golden
// file (a conversation that ends with an assistant answer, so prompt+completion is the whole).
func TestRenderGoldenIDs(t *testing.T) {
	tok := shared.Path(t, "tokenizers", "mistral-7b-v0.3")
	data, err := os.ReadFile(shared.Path(t, "refs", "chat_template_golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		Cases []struct {
			Name       string          `json:"name"`
			Messages   json.RawMessage `json:"messages"`
			Tools      json.RawMessage `json:"tools"`
			ArgsParsed *struct {
				Rendered string  `json:"rendered"`
				IDs      []int32 `json:"ids"`
			} `json:"args_parsed"`
		} `json:"cases"`
	}
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatal(err)
	}
	for _, c := range g.Cases {
		if c.Name != "parallel_tool_calls" {
			continue
		}
		var row bytes.Buffer // one line: the golden file is indented
		if err := json.Compact(&row, []byte(`{"messages": `+string(c.Messages)+`, "tools": `+string(c.Tools)+`, "label": true}`)); err != nil {
			t.Fatal(err)
		}
		out, code := runOutCmd(t, "render", "--tokenizer", tok, "--input", writeFile(t, "g.jsonl", row.String()+"\n"))
		if code != 0 {
			t.Fatalf("exit %d: %s", code, out)
		}
		var r struct {
			Prompt, Completion string
			PromptIDs          []int32 `json:"prompt_ids"`
			CompletionIDs      []int32 `json:"completion_ids"`
		}
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if got := append(r.PromptIDs, r.CompletionIDs...); !slices.Equal(got, c.ArgsParsed.IDs) {
			t.Errorf("ids\n got %v\nwant %v", got, c.ArgsParsed.IDs)
		}
		if r.Prompt+r.Completion != c.ArgsParsed.Rendered {
			t.Errorf("text\n got %q\nwant %q", r.Prompt+r.Completion, c.ArgsParsed.Rendered)
		}
		return
	}
	t.Fatal("golden case parallel_tool_calls not found")
}

func TestRenderExitCodes(t *testing.T) {
	t.Setenv("KTOLOADER_TOKENIZER", "")
	in := writeFile(t, "rows.jsonl", rowAlternate+"\n")
	notList := writeFile(t, "tools.json", `{"type": "function"}`)
	cases := []struct {
		name string
		args []string
		want int
	}{
		{"ok", []string{"--tokenizer", demoTokenizer, "--input", in}, 0},
		{"strict stops at a template error", []string{"--tokenizer", demoTokenizer, "--input", in, "--strict"}, 1},
		{"no tokenizer", []string{"--input", in}, 2},
		{"bad mode", []string{"--tokenizer", demoTokenizer, "--input", in, "--assistant-text-with-tools", "maybe"}, 2},
		{"tools not a list", []string{"--tokenizer", demoTokenizer, "--input", in, "--tools", notList}, 2},
		{"tokenizer missing", []string{"--tokenizer", filepath.Join(t.TempDir(), "none"), "--input", in}, 1},
		{"input missing", []string{"--tokenizer", demoTokenizer, "--input", filepath.Join(t.TempDir(), "none.jsonl")}, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, code := runOutCmd(t, "render", c.args...); code != c.want {
				t.Errorf("exit %d, want %d", code, c.want)
			}
		})
	}
}
