package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/kto"
)

// prepOutDir runs prep on the embedded sample with the demo tokenizer into a new directory.
func prepOutDir(t *testing.T, extra ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "out")
	args := append([]string{"--out", dir, "--tokenizer", demoTokenizer, "--no-progress", "--json"}, extra...)
	if out, code := runOutCmd(t, "prep", args...); code != 0 {
		t.Fatalf("prep exit %d: %s", code, out)
	}
	return dir
}

func TestVerifyCommand(t *testing.T) {
	dir := prepOutDir(t, "--format", "both", "--test-frac", "0.2", "--shard-rows", "50")
	out, code := runOutCmd(t, "verify", dir)
	if code != 0 || !strings.Contains(out, ": OK") {
		t.Fatalf("verify of a fresh prep: exit %d\n%s", code, out)
	}

	m, err := export.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	victim := m.Files[len(m.Files)/2].Path
	p := filepath.Join(dir, filepath.FromSlash(victim))
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, code = runOutCmd(t, "verify", dir)
	if code != 1 || !strings.Contains(out, victim+": [sha256]") {
		t.Errorf("one flipped bit in %s: exit %d, want 1 and a sha256 violation naming it:\n%s", victim, code, out)
	}

	out, code = runOutCmd(t, "verify", "--json", dir)
	var rep struct {
		OK         bool               `json:"ok"`
		Files      int                `json:"files"`
		Violations []export.Violation `json:"violations"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json output is not JSON: %v\n%s", err, out)
	}
	if code != 1 || rep.OK || rep.Files != len(m.Files) || len(rep.Violations) == 0 || rep.Violations[0].File != victim {
		t.Errorf("--json: exit %d, report %+v", code, rep)
	}
}

func TestVerifyCommandUsage(t *testing.T) {
	if _, code := runOutCmd(t, "verify"); code != 2 {
		t.Errorf("no argument: exit %d, want 2", code)
	}
	if _, code := runOutCmd(t, "verify", t.TempDir()); code != 1 {
		t.Errorf("directory without manifest: exit %d, want 1", code)
	}
}

// TestVerifyCoalesces damages one kto/ shard so that an invariant breaks on every row (each
// row's KL completion replaced), and checks that the text report gives the sha256 line and
// one summary per file, with counts that add up to the --json report's, instead of a line
// per violation.
func TestVerifyCoalesces(t *testing.T) {
	dir := prepOutDir(t)
	m, err := export.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	var victim string
	for _, fi := range m.Files {
		if fi.Kind == export.KindKTO && fi.Split == "train" {
			victim = fi.Path
		}
	}
	rows, err := export.ReadAll[kto.KTORow](filepath.Join(dir, victim))
	if err != nil {
		t.Fatal(err)
	}
	for i := range rows {
		rows[i].KLCompletionIDs = append([]int32{7}, rows[i].KLCompletionIDs...)
	}
	tmp := t.TempDir()
	sw, err := export.NewShardWriter[kto.KTORow](tmp, export.KindKTO, "train", export.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := sw.Write(rows...); err != nil {
		t.Fatal(err)
	}
	files, err := sw.Close()
	if err != nil || len(files) != 1 {
		t.Fatalf("rewriting the shard: %v %v", files, err)
	}
	if err := os.Rename(filepath.Join(tmp, filepath.FromSlash(files[0].Path)), filepath.Join(dir, filepath.FromSlash(victim))); err != nil {
		t.Fatal(err)
	}

	jsonOut, code := runOutCmd(t, "verify", "--json", dir)
	var rep struct {
		Violations []export.Violation  `json:"violations"`
		Omitted    int                 `json:"omitted"`
		Counts     []export.CheckCount `json:"counts"`
	}
	if err := json.Unmarshal([]byte(jsonOut), &rep); err != nil || code != 1 {
		t.Fatalf("verify --json: exit %d, %v", code, err)
	}
	total, perFile := 0, map[string]int{}
	for _, c := range rep.Counts {
		total += c.N
		perFile[c.File] += c.N
	}
	if total != len(rep.Violations)+rep.Omitted || perFile[victim] < len(rows) {
		t.Fatalf("counts %+v: total %d, want %d listed + omitted, and at least %d in %s",
			rep.Counts, total, len(rep.Violations)+rep.Omitted, len(rows), victim)
	}

	out, code := runOutCmd(t, "verify", dir)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 1 || !strings.HasPrefix(lines[0], victim+": [sha256]") {
		t.Fatalf("exit %d; the first line should be %s's sha256:\n%s", code, victim, out)
	}
	// One sha256 line, then per file one line or a summary with at most verifyExamples+1
	// examples per check and a "more" line, then the verdict and the damage note.
	if limit := 2 + 3*len(perFile)*(verifyExamples+3); len(lines) > limit || total < 2*len(lines) {
		t.Errorf("%d violations took %d lines (limit %d):\n%s", total, len(lines), limit, out)
	}
	for f, n := range perFile {
		name := f
		if name == "" {
			name = export.ManifestName
		}
		if f == victim {
			n-- // its sha256 line is printed on its own
		}
		if n > 1 && !strings.Contains(out, fmt.Sprintf("%s: %d violations (", name, n)) {
			t.Errorf("no summary \"%s: %d violations (…)\":\n%s", name, n, out)
		}
	}
	if !strings.Contains(out, fmt.Sprintf(": %d violations in %d files", total, len(perFile))) {
		t.Errorf("verdict should count %d violations in %d files:\n%s", total, len(perFile), out)
	}
}
