package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/internal/shared"
)

// unbalancedNexus writes the Nexus KTO file with only every 20th undesirable row kept: about
// 2284 desirable and 114 undesirable rows, too few to put one in most batches of 8.
func unbalancedNexus(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	var out bytes.Buffer
	sc := bufio.NewScanner(in)
	sc.Buffer(nil, 1<<24)
	undesirable := 0
	for sc.Scan() {
		var row struct{ Label any }
		if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
			t.Fatal(err)
		}
		if row.Label == false {
			if undesirable++; undesirable%20 != 0 {
				continue
			}
		}
		out.Write(sc.Bytes())
		out.WriteByte('\n')
	}
	if err := os.WriteFile(dst, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestPrepWarnings: runs that succeed but wrote something the user probably did not mean
// say so on stderr, in manifest.json's warnings and at the top of report; a normal run says
// nothing and its manifest has no warnings key.
func TestPrepWarnings(t *testing.T) {
	tok := shared.Path(t, "tokenizers", "mistral-7b-v0.3")
	data := shared.Path(t, "data")
	nexus := filepath.Join(data, "nexus", "behavior_merged_kto_v1.5_balanced.jsonl")
	dir := t.TempDir()
	unbal := filepath.Join(dir, "unbalanced.jsonl")
	unbalancedNexus(t, nexus, unbal)
	for _, tc := range []struct {
		name  string
		args  []string
		codes []string
	}{
		{"nexus", []string{"-i", nexus}, nil},
		{"taubench", []string{"-i", filepath.Join(data, "taubench_airline", "gpt-4o-airline.openai.jsonl")},
			[]string{export.WarnRejected, export.WarnSingleLabel}},
		{"glaive", []string{"-i", filepath.Join(data, "glaive_toolcall", "glaive_toolcall_en_demo.openai.jsonl")},
			[]string{export.WarnSingleLabel}},
		{"maxlen10", []string{"-i", nexus, "--max-len", "10"}, []string{export.WarnNoRows}},
		{"unbalanced", []string{"-i", unbal}, []string{export.WarnBatchesMissLabel}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, tc.name)
			code, _, stderr := runCLIErr(t, append([]string{"prep", "--tokenizer", tok, "--out", out, "--no-progress"}, tc.args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			m, err := export.ReadManifest(out)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, w := range m.Warnings {
				got = append(got, w.Code)
				if !strings.Contains(stderr, "warning ["+w.Code+"]: "+w.Message) {
					t.Errorf("stderr lacks warning %s: %q", w.Code, stderr)
				}
			}
			if !slices.Equal(got, tc.codes) {
				t.Errorf("manifest warnings %v, want %v", m.Warnings, tc.codes)
			}
			raw, _ := os.ReadFile(filepath.Join(out, export.ManifestName))
			if has := bytes.Contains(raw, []byte(`"warnings"`)); has != (len(tc.codes) > 0) {
				t.Errorf("manifest has a warnings key: %v, want %v", has, len(tc.codes) > 0)
			}
			if len(tc.codes) == 0 && strings.Contains(stderr, "warning") {
				t.Errorf("a normal run warns: %q", stderr)
			}
			if tc.name == "maxlen10" {
				return // nothing to report on
			}
			code, summary, stderr := runCLIErr(t, "report", out, "--html", filepath.Join(dir, tc.name+".html"))
			if code != 0 {
				t.Fatalf("report: exit %d: %s", code, stderr)
			}
			lines := strings.Split(summary, "\n")
			for i, w := range m.Warnings { // first, right under the title
				if want := "WARNING [" + w.Code + "]: " + w.Message; len(lines) <= i+1 || lines[i+1] != want {
					t.Errorf("report line %d = %q, want %q", i+2, lines[min(i+1, len(lines)-1)], want)
				}
			}
			single := slices.Contains(tc.codes, export.WarnSingleLabel)
			if skipped := strings.Contains(summary, "label shortcuts: skipped: every example is desirable"); skipped != single {
				t.Errorf("report says shortcuts skipped: %v, want %v:\n%s", skipped, single, summary)
			}
			if single && (strings.Contains(summary, "Label shortcut") || strings.Contains(summary, "appear only in")) {
				t.Errorf("single-label report still shows label-shortcut findings:\n%s", summary)
			}
		})
	}
}
