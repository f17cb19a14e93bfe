package tokenize

import (
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/ktoloader/ktoloader/internal/shared"
	"github.com/ktoloader/ktoloader/loader"
)

var (
	mistralOnce sync.Once
	mistralTok  *Tokenizer
	mistralErr  error
)

// realTokenizer loads shared/tokenizers/mistral-7b-v0.3 once (skips when absent).
func realTokenizer(t *testing.T) *Tokenizer {
	t.Helper()
	dir := shared.Path(t, "tokenizers", "mistral-7b-v0.3")
	mistralOnce.Do(func() { mistralTok, mistralErr = Load(dir) })
	if mistralErr != nil {
		t.Fatalf("Load(%s): %v", dir, mistralErr)
	}
	return mistralTok
}

// TestGoldenIDs: segment-wise ids equal Hugging Face tokenizers' ids of the whole rendered
// string (the goldens' "ids", or args_parsed's where arguments are parsed).
func TestGoldenIDs(t *testing.T) {
	g := loadChatGolden(t)
	m, err := NewMistral(realTokenizer(t), Options{AssistantTextWithTools: "drop"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range g.Cases {
		t.Run(c.Name, func(t *testing.T) {
			want := c.IDs
			if c.ArgsParsed != nil {
				want = c.ArgsParsed.IDs
			}
			segs, err := ApplyTemplate(goldenMessages(t, c.Messages), nullToNil(c.Tools), m.Opt)
			if err != nil {
				t.Fatal(err)
			}
			got := m.AppendIDs(nil, segs)
			if !slices.Equal(got, want) {
				t.Errorf("ids differ from HF tokenizers at %d\n got %v\nwant %v", firstDiff(got, want), got, want)
			}
		})
	}
}

// TestExampleSplitsGoldenIDs: Example's prompt and completion ids against the goldens.
// A golden conversation that ends with a user or tool message is a prompt: with an answer
// appended, PromptIDs must be its golden ids exactly (system folding, tools placement and the
// dropped system message included). One that ends with an assistant message (and so folds no
// system message) must split into PromptIDs + CompletionIDs = its golden ids.
func TestExampleSplitsGoldenIDs(t *testing.T) {
	g := loadChatGolden(t)
	m, err := NewMistral(realTokenizer(t), Options{AssistantTextWithTools: "drop"})
	if err != nil {
		t.Fatal(err)
	}
	prompts, whole := 0, 0
	for _, c := range g.Cases {
		msgs := goldenMessages(t, c.Messages)
		wantIDs, wantText := c.IDs, c.Rendered
		if c.ArgsParsed != nil {
			wantIDs, wantText = c.ArgsParsed.IDs, c.ArgsParsed.Rendered
		}
		isPrompt := msgs[len(msgs)-1].Role != "assistant"
		if isPrompt {
			msgs = append(msgs, loader.Message{Role: "assistant", Content: str("Done.")})
			prompts++
		} else if msgs[0].Role == "system" {
			continue // the prompt folds the system message; the whole conversation does not
		} else {
			whole++
		}
		t.Run(c.Name, func(t *testing.T) {
			row := loader.Row{Source: loader.Source{File: "golden", Line: 7}, Messages: msgs, Tools: nullToNil(c.Tools), Label: true, Behavior: "b"}
			ex, err := m.Example(&row)
			if err != nil {
				t.Fatal(err)
			}
			got, gotText := ex.PromptIDs, ex.Prompt
			if !isPrompt {
				got, gotText = append(slices.Clone(ex.PromptIDs), ex.CompletionIDs...), ex.Prompt+ex.Completion
			}
			if !slices.Equal(got, wantIDs) {
				t.Errorf("ids differ at %d\n got %v\nwant %v", firstDiff(got, wantIDs), got, wantIDs)
			}
			if gotText != wantText {
				t.Errorf("text\n got %q\nwant %q", gotText, wantText)
			}
			if ex.PromptIDs[0] != BOSID || ex.CompletionIDs[len(ex.CompletionIDs)-1] != EOSID {
				t.Errorf("prompt does not start with <s> or completion does not end with </s>")
			}
			if ex.Source.String() != "golden:7" || !ex.Label || ex.Behavior != "b" {
				t.Errorf("Source/Label/Behavior = %q/%v/%q", ex.Source, ex.Label, ex.Behavior)
			}
		})
	}
	if prompts < 10 || whole == 0 {
		t.Fatalf("golden file shapes changed: %d prompt cases, %d whole conversations", prompts, whole)
	}
}

// byteEncoder is a fake tokenizer: one id per byte (1000 + byte), so tests can see exactly
// which text went where without depending on BPE.
type byteEncoder struct{}

func (byteEncoder) AppendText(dst []int32, text string, first bool) []int32 {
	if first {
		panic("a text segment was encoded as if at offset 0")
	}
	for i := 0; i < len(text); i++ {
		dst = append(dst, 1000+int32(text[i]))
	}
	return dst
}

func (byteEncoder) Decode(ids []int32) string {
	var b strings.Builder
	for _, id := range ids {
		if id >= 1000 {
			b.WriteByte(byte(id - 1000))
		} else {
			b.WriteString(ControlName(id))
		}
	}
	return b.String()
}

func TestPromptAssistant(t *testing.T) {
	row := parseTestRow(t, refRenderRows[3].row) // user, assistant text+call, tool, assistant, user, assistant
	m := &Mistral{Tok: byteEncoder{}}
	ex, err := m.Example(&row)
	if err != nil {
		t.Fatal(err)
	}
	if len(ex.PromptAssistant) != len(ex.PromptIDs) {
		t.Fatalf("mask has %d entries for %d ids", len(ex.PromptAssistant), len(ex.PromptIDs))
	}
	if got := (byteEncoder{}).Decode(ex.PromptIDs); got != ex.Prompt {
		t.Fatalf("ids decode to %q, prompt is %q", got, ex.Prompt)
	}
	var marked []string
	var cur []int32
	for i, id := range ex.PromptIDs {
		if ex.PromptAssistant[i] {
			cur = append(cur, id)
		} else if cur != nil {
			marked = append(marked, (byteEncoder{}).Decode(cur))
			cur = nil
		}
	}
	want := []string{
		` Sure.[TOOL_CALLS] [{"name": "f", "arguments": {"a": 1}, "id": "x1y2z3w4v"}]</s>`,
		` Done.</s>`,
	}
	if !slices.Equal(marked, want) {
		t.Errorf("assistant spans of the prompt\n got %q\nwant %q", marked, want)
	}
}

type wrongControls struct{ byteEncoder }

func (wrongControls) ControlID(name string) (int32, bool) {
	if name == "[TOOL_CALLS]" {
		return 42, true
	}
	for id, n := range controlNames {
		if n == name {
			return int32(id), true
		}
	}
	return 0, false
}

func TestMistralChecksControlIDs(t *testing.T) {
	if _, err := NewMistral(wrongControls{}, Options{}); err == nil || !strings.Contains(err.Error(), "[TOOL_CALLS]") {
		t.Errorf("NewMistral with [TOOL_CALLS] at 42: err = %v", err)
	}
	m := &Mistral{Tok: wrongControls{}}
	row := parseTestRow(t, refRenderRows[0].row)
	if _, err := m.Example(&row); err == nil {
		t.Errorf("Example with wrong control ids succeeded")
	}
}

func firstDiff(a, b []int32) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// nexusRows reads the rows of the Nexus KTO file that the loader accepts (skips when
// ../shared is absent).
func nexusRows(tb testing.TB) []loader.Row {
	tb.Helper()
	r, err := loader.Open(shared.Path(tb, "data", "nexus", "behavior_merged_kto_v1.5_balanced.jsonl"), loader.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	defer r.Close()
	var rows []loader.Row
	for {
		row, err := r.Read()
		var re *loader.RowError
		switch {
		case errors.As(err, &re):
			continue
		case errors.Is(err, io.EOF):
			return rows
		case err != nil:
			tb.Fatal(err)
		}
		rows = append(rows, row)
	}
}

// BenchmarkExample renders and tokenizes the Nexus KTO rows (ids repaired, arguments
// re-serialized), reporting rows/s and tokens/s.
func BenchmarkExample(b *testing.B) {
	rows := nexusRows(b)
	tok, err := Load(shared.Path(b, "tokenizers", "mistral-7b-v0.3"))
	if err != nil {
		b.Fatal(err)
	}
	m, err := NewMistral(tok, Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	tokens := 0
	for i := 0; i < b.N; i++ {
		ex, err := m.Example(&rows[i%len(rows)])
		if err != nil {
			b.Fatal(err)
		}
		tokens += len(ex.PromptIDs) + len(ex.CompletionIDs)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric(float64(tokens)/b.Elapsed().Seconds(), "tokens/s")
}

// TestGroupOf: rows that ask the same thing share a group whatever their system message
// (Nexus puts per-row session ids there) or spacing; a different request does not.
func TestGroupOf(t *testing.T) {
	s := func(v string) *string { return &v }
	conv := func(sys, user, answer string) []loader.Message {
		return []loader.Message{{Role: "system", Content: s(sys)}, {Role: "user", Content: s(user)}, {Role: "assistant", Content: s(answer)}}
	}
	a := GroupOf(conv("<sessionId>s_1</sessionId>", "Find my  notes", "ok"))
	if b := GroupOf(conv("<sessionId>s_2</sessionId>", "find my notes ", "different answer")); a != b {
		t.Error("same request, other system message, spacing and answer: different groups")
	}
	if c := GroupOf(conv("<sessionId>s_1</sessionId>", "Find my old notes", "ok")); a == c {
		t.Error("different requests share a group")
	}
	if d := GroupOf(conv("x", "Find myno tes", "ok")); a == d {
		t.Error("word boundaries ignored")
	}
}

// TestMinTokensBound: MinTokens never exceeds the real count, on every row of the Nexus KTO
// file (prompt and completion, real Mistral tokenizer), and is within a small factor of it
// (a bound that were always 1 would pass the first check and reject nothing).
func TestMinTokensBound(t *testing.T) {
	tok := realTokenizer(t)
	if b := tok.MaxPieceBytes(); b < 4 || b > 64 {
		t.Fatalf("MaxPieceBytes %d", b)
	}
	m, err := NewMistral(tok, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var bound, count, rows int
	for _, row := range nexusRows(t) {
		rd, err := m.Render(&row)
		if err != nil {
			continue
		}
		ex := m.Encode(&row, rd)
		for _, c := range []struct {
			segs []Segment
			ids  []int32
		}{{rd.Prompt, ex.PromptIDs}, {rd.Completion, ex.CompletionIDs}} {
			n, ok := m.MinTokens(c.segs)
			if !ok || n > len(c.ids) {
				t.Fatalf("%s: MinTokens %d (ok %v) > %d tokens", row.Source, n, ok, len(c.ids))
			}
			bound += n
			count += len(c.ids)
		}
		rows++
	}
	if rows < 4000 || bound*10 < count {
		t.Errorf("%d rows: bound %d for %d tokens", rows, bound, count)
	}
	t.Logf("%d rows: MinTokens sums to %d, the tokens to %d (%.2f)", rows, bound, count, float64(bound)/float64(count))
}
