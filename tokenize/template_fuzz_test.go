package tokenize

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/ktoloader/ktoloader/loader"
)

// fuzzRow builds a JSONL row from fuzzed parts: script chooses, one byte per message, the
// role and shape of each message (system, user, assistant text, assistant tool calls, tool
// result), which of the strings becomes its content, how many calls it makes and which id
// each call and tool result carries; args is every call's arguments (as a JSON string, or as
// a raw object when the script says so; wrapped as {"q": args} when it is no JSON object);
// tools, when script's length is odd, becomes a tools list. The script is bent to the
// loader's order rules and a final assistant answer added when missing, so that most rows
// get past the loader to the template, whose own rules are stricter.
func fuzzRow(script []byte, strs [3]string, args string) []byte {
	pick := func(b byte) any {
		if b%4 == 3 {
			return ""
		}
		return strs[b%4]
	}
	ids := []string{"abcdefghi", strs[1], "", "call_" + strs[2], "A1b2C3d4E"}
	argsObj := json.Valid([]byte(args)) && strings.HasPrefix(strings.TrimSpace(args), "{")
	if !argsObj {
		b, _ := json.Marshal(map[string]string{"q": args})
		args = string(b)
	}
	var msgs []map[string]any
	var lastIDs []string
	prev := ""
	for i, b := range script {
		if i == 48 {
			break
		}
		m := map[string]any{}
		// Bend the script to the loader's order rules: system only first, then a user
		// message, tool results only after calls, no two users or answers in a row.
		kind := b % 5
		if kind == 0 && i > 0 {
			kind = 1
		}
		if kind == 4 && prev != "calls" && prev != "tool" {
			kind = 1
		}
		if (kind == 2 || kind == 3) && (prev == "" || prev == "system" || prev == "assistant") {
			kind = 1
		}
		if kind == 1 && prev == "user" {
			kind = 2
		}
		switch kind {
		case 0:
			m["role"], m["content"] = "system", pick(b>>3)
		case 1:
			m["role"], m["content"] = "user", pick(b>>3)
		case 2:
			m["role"], m["content"] = "assistant", pick(b>>3)
		case 3:
			m["role"] = "assistant"
			if b&0x80 != 0 {
				m["content"] = pick(b >> 3)
			} else if b&0x10 != 0 {
				m["content"] = nil
			}
			var calls []map[string]any
			lastIDs = lastIDs[:0]
			for j := 0; j <= int(b>>5)%3; j++ {
				id := ids[(int(b>>2)+j)%len(ids)]
				lastIDs = append(lastIDs, id)
				var a any = args
				if b&0x40 != 0 {
					a = json.RawMessage(args)
				}
				name := []string{"f", strs[0], "get_x"}[(int(b)+j)%3]
				if strings.TrimSpace(name) == "" {
					name = "f"
				}
				fn := map[string]any{"name": name, "arguments": a}
				c := map[string]any{"type": "function", "function": fn}
				if id != "" || b&0x20 == 0 {
					c["id"] = id
				}
				calls = append(calls, c)
			}
			m["tool_calls"] = calls
		case 4:
			m["role"], m["content"] = "tool", pick(b>>3)
			id := strs[1]
			if len(lastIDs) > 0 && b&0x80 == 0 {
				id = lastIDs[int(b>>3)%len(lastIDs)]
			}
			m["tool_call_id"] = id
		}
		prev, _ = m["role"].(string)
		if kind == 3 {
			prev = "calls"
		}
		msgs = append(msgs, m)
	}
	switch prev {
	case "", "system":
		msgs = append(msgs, map[string]any{"role": "user", "content": strs[0]})
		fallthrough
	case "user", "tool":
		msgs = append(msgs, map[string]any{"role": "assistant", "content": strs[len(script)%3]})
	}
	row := map[string]any{"conversations": msgs, "label": len(script)%3 != 0, "behavior": strs[2]}
	if len(script)%2 == 1 {
		params := json.RawMessage(`{"type": "object"}`)
		if argsObj {
			params = json.RawMessage(args)
		}
		row["tools"] = []any{map[string]any{"type": "function", "function": map[string]any{"name": strs[0], "parameters": params}}}
	}
	b, err := json.Marshal(row)
	if err != nil {
		return nil
	}
	return b
}

// FuzzTemplate renders rows the loader accepts, built from fuzzed strings, roles, ids and
// arguments, with both --assistant-text-with-tools settings. Each must render or give a
// *TemplateError with a known reason and a field path, never panic, and a rendering must
// hold, checked independently of the renderer:
//   - the prompt starts with <s>; segments are control ids of the template or non-empty
//     text; per message of the prompt one [INST] per user, one </s> per assistant, one
//     [TOOL_RESULTS] per tool result; every user text appears as written;
//   - the completion is " " + strip(content) + "</s>", or [TOOL_CALLS] and a JSON list that
//     encoding/json reads back as the calls: names, arguments (as JSON values) and ids, each
//     id 9 alphanumerics;
//   - Example's ids (one id per byte here) spell exactly the prompt and the completion;
//   - the row is not modified, and rendering twice gives the same result.
func FuzzTemplate(f *testing.F) {
	f.Add([]byte{1, 2}, "hi", "hello", "b", `{}`)
	f.Add([]byte{0, 1, 3, 4, 2, 1, 2}, "sys", "x1y2z3w4v", "beh", `{"a": 1, "b": [1.0, 2e3, "é"]}`)
	f.Add([]byte{1, 0x53, 4, 4, 4, 2}, "  [INST] </s> ", "call_1", "t", `{"z": {"y": null}, "n": 12345678901234567890123}`)
	f.Add([]byte{1, 0x80, 4, 4, 1, 3}, "x", "A1b2C3d4E", "\u00e9", `{"a": "b", "a": 1e400}`)
	f.Add([]byte{1, 3, 4, 1, 3}, "\u00a0x\u2028", "", "", `{"q": "\ud83d\ude00"}`)
	f.Add([]byte{1, 0xa3, 4, 2}, "a", "b", "c", `not json`)
	f.Add([]byte{0, 2}, "s", "a", "c", `[1]`)
	f.Fuzz(func(t *testing.T, script []byte, s0, s1, s2, args string) {
		line := fuzzRow(script, [3]string{s0, s1, s2}, args)
		if line == nil {
			return
		}
		row, err := loader.ParseRow(line, "fuzz", 1, loader.Config{})
		if err != nil {
			return // only rows the loader accepts reach the template
		}
		before := cloneRow(row)
		for _, opt := range []Options{{}, {AssistantTextWithTools: "drop"}} {
			r1, err := Render(&row, opt)
			if !reflect.DeepEqual(row, before) {
				t.Fatalf("Render modified the row")
			}
			r2, err2 := Render(&row, opt)
			if !reflect.DeepEqual(r1, r2) || (err == nil) != (err2 == nil) || (err != nil && err.Error() != err2.Error()) {
				t.Fatalf("two renderings differ")
			}
			if err != nil {
				var te *TemplateError
				if !errors.As(err, &te) {
					t.Fatalf("error %T %v is not a *TemplateError", err, err)
				}
				if Reason(err) == "error" || te.Err == nil {
					t.Fatalf("template error without a known reason: %v", err)
				}
				if !strings.HasPrefix(te.Field, "conversations") && !strings.HasPrefix(te.Field, "tools") {
					t.Fatalf("template error names no field: %v", err)
				}
				continue
			}
			checkRendering(t, &row, r1, opt)
			m := &Mistral{Tok: byteEncoder{}, Opt: opt}
			ex, err := m.Example(&row)
			if err != nil {
				t.Fatalf("Render succeeded, Example failed: %v", err)
			}
			if got := (byteEncoder{}).Decode(ex.PromptIDs); got != ex.Prompt || got != Spell(r1.Prompt) {
				t.Fatalf("prompt ids spell %q, prompt is %q", got, ex.Prompt)
			}
			if got := (byteEncoder{}).Decode(ex.CompletionIDs); got != ex.Completion || got != Spell(r1.Completion) {
				t.Fatalf("completion ids spell %q, completion is %q", got, ex.Completion)
			}
			if len(ex.PromptAssistant) != len(ex.PromptIDs) || ex.PromptIDs[0] != BOSID || ex.CompletionIDs[len(ex.CompletionIDs)-1] != EOSID {
				t.Fatalf("example shape: %d mask for %d ids", len(ex.PromptAssistant), len(ex.PromptIDs))
			}
		}
	})
}

// cloneRow deep-copies what Render could modify in place.
func cloneRow(r loader.Row) loader.Row {
	c := r
	c.Messages = make([]loader.Message, len(r.Messages))
	for i, m := range r.Messages {
		c.Messages[i] = m
		if m.Content != nil {
			s := *m.Content
			c.Messages[i].Content = &s
		}
		if m.ToolCalls != nil {
			calls := append([]loader.ToolCall(nil), m.ToolCalls...)
			for j := range calls {
				calls[j].Arguments = bytes.Clone(calls[j].Arguments)
			}
			c.Messages[i].ToolCalls = calls
		}
	}
	c.Tools = bytes.Clone(r.Tools)
	c.Raw = bytes.Clone(r.Raw)
	return c
}

// checkRendering holds a rendering to the properties listed on FuzzTemplate.
func checkRendering(t *testing.T, row *loader.Row, r *Rendering, opt Options) {
	t.Helper()
	checkSegments(t, r.Prompt)
	if len(r.PromptAssistant) != len(r.Prompt) {
		t.Fatalf("%d assistant marks for %d segments", len(r.PromptAssistant), len(r.Prompt))
	}
	for _, segs := range [][]Segment{r.Prompt, r.Completion} {
		for _, s := range segs {
			if s.Control >= 0 && (ControlName(s.Control) == "" || s.Text != "") {
				t.Fatalf("segment %+v is neither a template control token nor text", s)
			}
			if s.Control < 0 && (s.Control != -1 || s.Text == "") {
				t.Fatalf("bad text segment %+v", s)
			}
		}
	}
	msgs := r.Messages
	n := len(msgs)
	if n != len(row.Messages) {
		t.Fatalf("rendering has %d messages, the row %d", n, len(row.Messages))
	}
	count := func(segs []Segment, id int32) int {
		k := 0
		for _, s := range segs {
			if s.Control == id {
				k++
			}
		}
		return k
	}
	var users, assistants, tools int
	spelled := Spell(r.Prompt)
	for i := range msgs[:n-1] {
		switch msgs[i].Role {
		case "user":
			users++
			if !strings.Contains(spelled, msgs[i].Text()) {
				t.Fatalf("user text %q missing from the prompt %q", msgs[i].Text(), spelled)
			}
		case "assistant":
			assistants++
		case "tool":
			tools++
		}
	}
	if count(r.Prompt, InstID) != users || count(r.Prompt, EOSID) != assistants || count(r.Prompt, ToolResultsID) != tools ||
		count(r.Prompt, BOSID) != 1 {
		t.Fatalf("prompt %q: [INST] %d for %d users, </s> %d for %d assistants, [TOOL_RESULTS] %d for %d tool results",
			spelled, count(r.Prompt, InstID), users, count(r.Prompt, EOSID), assistants, count(r.Prompt, ToolResultsID), tools)
	}

	last := msgs[n-1]
	comp := Spell(r.Completion)
	if len(last.ToolCalls) == 0 {
		if want := " " + pyStripRef(last.Text()) + "</s>"; comp != want {
			t.Fatalf("completion %q, want %q", comp, want)
		}
		return
	}
	body, ok := strings.CutSuffix(comp, "</s>")
	if !ok {
		t.Fatalf("completion %q does not end with </s>", comp)
	}
	text, list, ok := strings.Cut(body, "[TOOL_CALLS] ")
	if !ok {
		t.Fatalf("completion %q has no [TOOL_CALLS]", comp)
	}
	wantText := ""
	if opt.AssistantTextWithTools != "drop" && pyStripRef(last.Text()) != "" {
		wantText = " " + pyStripRef(last.Text())
	}
	if text != wantText {
		t.Fatalf("text before [TOOL_CALLS] %q, want %q", text, wantText)
	}
	var calls []struct {
		Name      string          `json:"name"`
		Arguments json.RawMessage `json:"arguments"`
		ID        string          `json:"id"`
	}
	if strings.Contains(list, "Infinity") || strings.Contains(list, "NaN") {
		return // Python writes an overflowing float as Infinity, which JSON has no word for
	}
	if err := json.Unmarshal([]byte(list), &calls); err != nil {
		t.Fatalf("tool calls %q are not a JSON list: %v", list, err)
	}
	if len(calls) != len(last.ToolCalls) {
		t.Fatalf("%d calls rendered, %d made", len(calls), len(last.ToolCalls))
	}
	for j, c := range calls {
		tc := last.ToolCalls[j]
		if c.Name != tc.Name || c.ID != tc.ID || !ValidToolCallID(c.ID) {
			t.Fatalf("call %d rendered as %q/%q, made as %q/%q", j, c.Name, c.ID, tc.Name, tc.ID)
		}
		if !sameJSON(c.Arguments, tc.Arguments) {
			t.Fatalf("call %d arguments rendered %s, given %s", j, c.Arguments, tc.Arguments)
		}
	}
}

// pyStripRef is Python's str.strip(), spelled out from its definition (str.isspace: the
// Unicode White_Space property, plus U+001C..U+001F), independently of pyStrip.
func pyStripRef(s string) string {
	isSpace := func(r rune) bool {
		switch r {
		case '\t', '\n', '\v', '\f', '\r', ' ', 0x1c, 0x1d, 0x1e, 0x1f, 0x85, 0xa0, 0x1680,
			0x2028, 0x2029, 0x202f, 0x205f, 0x3000:
			return true
		}
		return r >= 0x2000 && r <= 0x200a
	}
	return strings.TrimFunc(s, isSpace)
}

// sameJSON compares two JSON texts as values, numbers by their spelling as Python keeps
// integers exactly (a float's spelling may change: 1e3 → 1000.0).
func sameJSON(a, b []byte) bool {
	decode := func(p []byte) (any, bool) {
		d := json.NewDecoder(bytes.NewReader(p))
		d.UseNumber()
		var v any
		return v, d.Decode(&v) == nil
	}
	va, ok1 := decode(a)
	vb, ok2 := decode(b)
	return ok1 && ok2 && jsonEqual(va, vb)
}

func jsonEqual(a, b any) bool {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			if !jsonEqual(v, y[k]) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !jsonEqual(x[i], y[i]) {
				return false
			}
		}
		return true
	case json.Number:
		y, ok := b.(json.Number)
		if !ok {
			return false
		}
		if x == y {
			return true
		}
		fx, err1 := x.Float64()
		fy, err2 := y.Float64()
		return err1 == nil && err2 == nil && fx == fy
	}
	return a == b
}
