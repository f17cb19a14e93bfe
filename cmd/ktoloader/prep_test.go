package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

func TestPrepCLI(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "shards")
	code, stdout := runCLI(t, "prep", "--offline", "--out", out, "--json", "--no-progress", "--test-frac", "0.1",
		"--input", "../../testdata/broken.jsonl", "--max-line-bytes", "4096")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	var m struct {
		Counts    struct{ Read, Written, Rejected int64 }
		Tokenizer struct{ Demo bool }
	}
	if err := json.Unmarshal([]byte(stdout), &m); err != nil {
		t.Fatalf("--json output is not JSON: %v\n%s", err, stdout)
	}
	if m.Counts.Read != 29 || m.Counts.Read != m.Counts.Written+m.Counts.Rejected || !m.Tokenizer.Demo {
		t.Errorf("summary %+v", m)
	}
	if _, err := os.Stat(filepath.Join(out, "manifest.json")); err != nil {
		t.Fatal(err)
	}
	// A finished run of other inputs and flags needs --force: a usage error.
	if code, _ := runCLI(t, "prep", "--offline", "--out", out, "--no-progress"); code != 2 {
		t.Errorf("another run without --force: exit %d, want 2", code)
	}
	// --strict stops at the first bad row: a failure.
	if code, _ := runCLI(t, "prep", "--offline", "--out", filepath.Join(dir, "s"), "--no-progress", "--strict",
		"--input", "../../testdata/broken.jsonl"); code != 1 {
		t.Errorf("--strict with bad rows: exit %d, want 1", code)
	}
	// Bad flag values are usage errors.
	for _, args := range [][]string{
		{"prep", "--offline", "--out", filepath.Join(dir, "u1"), "--format", "csv"},
		{"prep", "--offline", "--out", filepath.Join(dir, "u2"), "--truncate", "middle"},
		{"prep", "--offline", "--out", filepath.Join(dir, "u3"), "--kto-batch-size", "1"},
		{"prep", "--no-such-flag"},
		{"no-such-command"},
	} {
		if code, _ := runCLI(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	// An explicit tokenizer path that does not load is an error, never the demo.
	if code, _ := runCLI(t, "prep", "--out", filepath.Join(dir, "t"), "--no-progress", "--tokenizer", filepath.Join(dir, "nope")); code != 1 {
		t.Errorf("missing --tokenizer path: exit %d, want 1", code)
	}
	// The embedded demo run: the README's first command.
	if code, _ := runCLI(t, "prep", "--offline", "--out", filepath.Join(dir, "demo"), "--no-progress"); code != 0 {
		t.Errorf("demo run: exit %d", code)
	}
}
