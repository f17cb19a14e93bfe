package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/kto"
)

// TestDump compares `dump`'s JSON lines with the rows read back by export, column by column.
func TestDump(t *testing.T) {
	dir := prepOutDir(t, "--test-frac", "0.2", "--shard-rows", "50", "--format", "both")
	out, code := runOutCmd(t, "dump", dir, "--dir", "kto", "--split", "train")
	if code != 0 {
		t.Fatalf("dump exit %d", code)
	}
	want := ktoRows(t, dir, "train")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d rows", len(lines), len(want))
	}
	cols, _ := export.Columns[kto.KTORow]()
	for i, line := range lines {
		var got struct {
			PromptIDs       []int32 `json:"prompt_ids"`
			CompletionIDs   []int32 `json:"completion_ids"`
			KLCompletionIDs []int32 `json:"KL_completion_ids"`
			Label           bool    `json:"label"`
			Behavior        string  `json:"behavior"`
			Prompt          string  `json:"prompt"`
			Completion      string  `json:"completion"`
			Source          string  `json:"source"`
			BatchIndex      int64   `json:"batch_index"`
		}
		dec := json.NewDecoder(strings.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		var keys map[string]json.RawMessage
		json.Unmarshal([]byte(line), &keys)
		if len(keys) != len(cols) {
			t.Fatalf("line %d has %d keys, the shard %d columns", i+1, len(keys), len(cols))
		}
		if !reflect.DeepEqual(kto.KTORow(got), want[i]) {
			t.Fatalf("line %d differs from row %d", i+1, i)
		}
	}
	if _, code := runOutCmd(t, "dump", dir, "--dir", "nope"); code != 2 {
		t.Errorf("--dir nope: exit %d, want 2", code)
	}
	if _, code := runOutCmd(t, "dump", dir, "--to", filepath.Join(dir, "d")); code != 2 {
		t.Errorf("--to inside OUT: exit %d, want 2", code)
	}
}

// TestCheckExamplesExitStatus runs examples/check_examples.py the three ways a user can: on
// shards it cannot read (no pyarrow, no dumps: SKIPPED, status 3, never "OK"), on `dump --to`
// dumps (status 0), and on dumps with a broken KL pairing (status 1).
func TestCheckExamplesExitStatus(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	dir := prepOutDir(t, "--test-frac", "0.2")
	script := filepath.Join("..", "..", "examples", "check_examples.py")
	check := func(args ...string) (int, string) {
		cmd := exec.Command(py, append([]string{script}, args...)...)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		} else if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	last := func(out string) string {
		lines := strings.Split(strings.TrimSpace(out), "\n")
		for i := len(lines) - 1; i >= 0; i-- {
			if strings.HasPrefix(lines[i], "OK") || strings.HasPrefix(lines[i], "SKIPPED") || strings.HasPrefix(lines[i], "FAILED") {
				return lines[i]
			}
		}
		return ""
	}

	if exec.Command(py, "-c", "import pyarrow").Run() != nil {
		code, out := check("--data", dir)
		if code != 3 || !strings.HasPrefix(last(out), "SKIPPED") || strings.Contains(out, "\nOK") {
			t.Errorf("--data without pyarrow: exit %d, want 3 and SKIPPED, not OK:\n%s", code, out)
		}
	}

	dump := filepath.Join(t.TempDir(), "dump")
	if _, code := runOutCmd(t, "dump", dir, "--to", dump); code != 0 {
		t.Fatalf("dump --to: exit %d", code)
	}
	if code, out := check("--data", dir, "--rows-dir", dump); code != 0 || !strings.HasPrefix(last(out), "OK") {
		t.Fatalf("--rows-dir of dump --to: exit %d, want 0 and OK:\n%s", code, out)
	}

	// Break the pairing of row 2: its KL completion becomes its own completion.
	p := filepath.Join(dump, "kto", "train-00000-of-00001.jsonl")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var rows []map[string]any
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	sc.Buffer(nil, 1<<26)
	for sc.Scan() {
		var r map[string]any
		json.Unmarshal(sc.Bytes(), &r)
		rows = append(rows, r)
	}
	rows[2]["KL_completion_ids"] = rows[2]["completion_ids"]
	var w strings.Builder
	for _, r := range rows {
		line, _ := json.Marshal(r)
		w.Write(line)
		w.WriteByte('\n')
	}
	if err := os.WriteFile(p, []byte(w.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out := check("--data", dir, "--rows-dir", dump); code != 1 || !strings.HasPrefix(last(out), "FAILED") {
		t.Errorf("a broken KL pair: exit %d, want 1 and FAILED:\n%s", code, out)
	}
}
