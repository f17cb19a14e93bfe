package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/kto"
)

// writeTrainData writes a minimal prep-like directory: manifest.json and one kto_packed
// train shard of three KTO batches of two examples (rows of 16 tokens, ids < 20); each
// row holds one example's target and its KL pair.
func writeTrainData(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "kto_packed"), 0o755); err != nil {
		t.Fatal(err)
	}
	var rows []kto.PackedRow
	for b := range 3 {
		for e := range 2 {
			prompt := []int32{1, int32(10 + b), int32(11 + e)}
			comp := []int32{int32(5 + e), 2}   // desirable: 5, undesirable: 6
			klComp := []int32{int32(6 - e), 2} // the other example's completion
			row := kto.PackedRow{InputIDs: make([]int32, 16), SegmentIDs: make([]int32, 16),
				PositionIDs: make([]int32, 16), LossMask: make([]int32, 16), BatchIndex: int64(b),
				SegmentLabel: []int32{int32(1 - e), int32(1 - e)}, SegmentKL: []bool{false, true},
				SegmentSource: []string{"t:1", "t:1"}, SegmentExample: []int32{int32(e), int32(e)}}
			off := 0
			for s, c := range [][]int32{comp, klComp} {
				for i, id := range append(append([]int32{}, prompt...), c...) {
					row.InputIDs[off+i], row.SegmentIDs[off+i], row.PositionIDs[off+i] = id, int32(s+1), int32(i)
					if i >= len(prompt) {
						row.LossMask[off+i] = 1
					}
				}
				off += len(prompt) + len(c)
			}
			rows = append(rows, row)
		}
	}
	shard := filepath.Join(dir, "kto_packed", "train-00000-of-00001.parquet")
	if err := parquet.WriteFile(shard, rows); err != nil {
		t.Fatal(err)
	}
	// The manifest lists the shard with its sha256: train reads only what it vouches for.
	m := export.NewManifest()
	m.Config.MaxLen, m.Config.KTOBatchSize = 16, 2
	m.Tokenizer.VocabSize = 20
	m.KTO.DesirableWeight, m.KTO.UndesirableWeight = 1, 1
	size, sum, err := export.FileSHA256(shard)
	if err != nil {
		t.Fatal(err)
	}
	m.Files = append(m.Files, export.FileInfo{Path: "kto_packed/train-00000-of-00001.parquet", Format: export.FormatParquet,
		Kind: export.KindKTOPacked, Split: "train", Rows: int64(len(rows)), Bytes: size, SHA256: sum})
	if err := export.WriteManifest(dir, m); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestTrainJSON checks the --json contract (DESIGN.md): one object per step with step,
// loss, rewards_chosen, rewards_rejected, kl, margin, tokens_per_s, then {"summary": …};
// --log gets the same lines.
func TestTrainJSON(t *testing.T) {
	dir := writeTrainData(t)
	logPath := filepath.Join(t.TempDir(), "train.jsonl")
	code, stdout, stderr := runCLIErr(t, "train", "--data", dir, "--steps", "3", "--json", "--log", logPath, "--seed", "3")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines on stdout, want 3 steps + summary:\n%s", len(lines), stdout)
	}
	for i, l := range lines[:3] {
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %d is not a JSON object: %q", i+1, l)
		}
		for _, k := range []string{"step", "loss", "rewards_chosen", "rewards_rejected", "kl", "margin", "tokens_per_s"} {
			if _, ok := m[k]; !ok {
				t.Errorf("line %d lacks %q: %s", i+1, k, l)
			}
		}
		if string(m["step"]) != string(rune('1'+i)) {
			t.Errorf("line %d: step %s", i+1, m["step"])
		}
	}
	var last struct {
		Summary *struct {
			Steps int     `json:"steps"`
			Loss  float64 `json:"final_loss"`
		} `json:"summary"`
	}
	if err := json.Unmarshal([]byte(lines[3]), &last); err != nil || last.Summary == nil || last.Summary.Steps != 3 {
		t.Errorf("last line is not the summary of 3 steps: %s (%v)", lines[3], err)
	}
	logged, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if string(logged) != stdout {
		t.Errorf("--log differs from --json output:\n%s\nvs\n%s", logged, stdout)
	}
	// The human output: step lines and a summary table, no JSON.
	code, stdout, stderr = runCLIErr(t, "train", "--data", dir, "--steps", "2", "--no-progress")
	if code != 0 || !strings.Contains(stdout, "final loss") || !strings.Contains(stderr, "step 2") {
		t.Errorf("exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
}

func TestTrainExitCodes(t *testing.T) {
	dir := writeTrainData(t)
	cases := []struct {
		args []string
		want int
	}{
		{[]string{}, 2}, // --data is required
		{[]string{"--data", dir, "--loss-type", "dpo"}, 2},    // unknown loss
		{[]string{"--data", dir, "--ref", "maybe"}, 2},        // unknown ref mode
		{[]string{"--data", dir, "--grad-accum", "0"}, 2},     // nonsense count
		{[]string{"--data", dir, "--resume"}, 2},              // resume needs --checkpoint-dir
		{[]string{"--data", dir, "--backend", "xla:cuda"}, 2}, // not compiled in
		{[]string{"--data", t.TempDir()}, 1},                  // no shards: the run fails
		{[]string{"--data", dir, "--model", "/nonexistent/config.json"}, 1},
		{[]string{"--data", dir, "--steps", "1", "--loss-type", "apo_zero_unpaired", "--json"}, 0},
	}
	for _, tc := range cases {
		code, _, stderr := runCLIErr(t, append([]string{"train"}, tc.args...)...)
		if code != tc.want {
			t.Errorf("train %v: exit %d, want %d\n%s", tc.args, code, tc.want, stderr)
		}
	}
	// Checkpoint, then resume to a longer run.
	ckpt := filepath.Join(t.TempDir(), "ckpt")
	if code, _, stderr := runCLIErr(t, "train", "--data", dir, "--steps", "2", "--checkpoint-dir", ckpt, "--json"); code != 0 {
		t.Fatalf("checkpointed run: exit %d\n%s", code, stderr)
	}
	if code, _, _ := runCLIErr(t, "train", "--data", dir, "--steps", "3", "--checkpoint-dir", ckpt); code != 2 {
		t.Errorf("reusing a checkpoint directory without --resume: exit %d, want 2 (as prep without --force)", code)
	}
	code, stdout, stderr := runCLIErr(t, "train", "--data", dir, "--steps", "3", "--checkpoint-dir", ckpt, "--resume", "--json")
	if code != 0 {
		t.Fatalf("resume: exit %d\n%s", code, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], `{"step":3,`) {
		t.Errorf("resumed run should do step 3 only:\n%s", stdout)
	}
	entries, _ := os.ReadDir(ckpt)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.ContainsFunc(names, func(n string) bool { return strings.HasSuffix(n, "-step-00000003.json") }) {
		t.Errorf("no checkpoint for step 3 in %v", names)
	}
}
