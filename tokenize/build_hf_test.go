package tokenize

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ktoloader/ktoloader/internal/shared"
	"github.com/ktoloader/ktoloader/loader"
)

// TestExamplesMatchHFTokenizers renders real rows (tau-bench with its OpenAI ids repaired,
// glaive with row tools, the first rows of the Nexus KTO set) and compares
// PromptIDs + CompletionIDs with Hugging Face tokenizers' encoding of Prompt + Completion, run
// through ../shared/tools/hf_encode.mjs. It skips without node and @anush008/tokenizers in
// $KTOREF_CACHE (default /tmp/ktoref; see ../shared/tools/README.md) and under -short.
// scripts/check_render.sh does the same for whole files, plus ref_render.py for the text.
func TestExamplesMatchHFTokenizers(t *testing.T) {
	if testing.Short() {
		t.Skip("drives node; skipped with -short")
	}
	script := shared.Path(t, "tools", "hf_encode.mjs")
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not found")
	}
	cache := os.Getenv("KTOREF_CACHE")
	if cache == "" {
		cache = "/tmp/ktoref"
	}
	if _, err := os.Stat(filepath.Join(cache, "node_modules", "@anush008", "tokenizers")); err != nil {
		t.Skipf("@anush008/tokenizers not installed in %s (KTOREF_CACHE)", cache)
	}
	tokDir := shared.Path(t, "tokenizers", "mistral-7b-v0.3")
	m, err := NewMistral(realTokenizer(t), Options{})
	if err != nil {
		t.Fatal(err)
	}

	inputs := []struct {
		path  []string
		limit int
	}{
		{[]string{"data", "taubench_airline", "gpt-4o-airline.openai.jsonl"}, 200},
		{[]string{"data", "glaive_toolcall", "glaive_toolcall_en_demo.openai.jsonl"}, 300},
		{[]string{"data", "nexus", "behavior_merged_kto_v1.5_balanced.jsonl"}, 600},
	}
	var exs []Example
	repaired := 0
	for _, in := range inputs {
		r, err := loader.Open(shared.Path(t, in.path...), loader.Config{})
		if err != nil {
			t.Fatal(err)
		}
		for n := 0; n < in.limit; n++ {
			row, err := r.Read()
			if err == io.EOF {
				break
			}
			var re *loader.RowError
			if errors.As(err, &re) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			ex, err := m.Example(&row)
			if err != nil {
				t.Fatalf("%s: %v", row.Source, err)
			}
			repaired += ex.RepairedIDs
			exs = append(exs, ex)
		}
		r.Close()
	}
	if repaired == 0 {
		t.Errorf("no ids repaired: tau-bench's OpenAI ids should all be")
	}

	var stdin bytes.Buffer
	enc := json.NewEncoder(&stdin)
	enc.SetEscapeHTML(false)
	for _, ex := range exs {
		if err := enc.Encode(ex.Prompt + ex.Completion); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(node, script, "--tokenizer", tokDir)
	cmd.Env = append(os.Environ(), "KTOREF_CACHE="+cache)
	cmd.Stdin = &stdin
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("hf_encode.mjs: %v: %s", err, stderr.String())
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 64<<20)
	i, bad := 0, 0
	for ; sc.Scan(); i++ {
		var want []int32
		if err := json.Unmarshal(sc.Bytes(), &want); err != nil {
			t.Fatal(err)
		}
		if i >= len(exs) {
			break
		}
		ex := exs[i]
		got := append(slices.Clone(ex.PromptIDs), ex.CompletionIDs...)
		if !slices.Equal(got, want) && !spellsControl(ex) {
			bad++
			if bad <= 3 {
				t.Errorf("%s: ids differ from HF tokenizers at %d\n got %v\nwant %v", ex.Source, firstDiff(got, want), got, want)
			}
		}
	}
	if i != len(exs) {
		t.Fatalf("hf_encode gave %d lines for %d strings", i, len(exs))
	}
	if bad > 0 {
		t.Errorf("%d of %d examples differ from HF tokenizers", bad, len(exs))
	}
	t.Logf("%d examples equal HF tokenizers' ids (%d tool-call ids repaired)", len(exs)-bad, repaired)
}

// spellsControl reports whether the example's text holds a control-token spelling outside
// the control tokens themselves: there HF tokenizers (parsing special tokens in the whole
// string) must differ from the segment-wise ids, by design.
func spellsControl(ex Example) bool {
	n := 0
	for _, name := range controlNames {
		if name != "" {
			n += strings.Count(ex.Prompt+ex.Completion, name)
		}
	}
	controls := 0
	for _, id := range append(slices.Clone(ex.PromptIDs), ex.CompletionIDs...) {
		if ControlName(id) != "" {
			controls++
		}
	}
	return n != controls
}
