package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/ktoloader/ktoloader/export"
)

// runOutCmd runs `ktoloader name args…` with the named command's flags reset (cobra keeps flag
// values between Execute calls) and returns stdout and the exit code.
func runOutCmd(t *testing.T, name string, args ...string) (string, int) {
	t.Helper()
	cmd, _, err := rootCmd.Find([]string{name})
	if err != nil || cmd.Name() != name {
		t.Fatalf("no %s command: %v", name, err)
	}
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			sv.Replace(nil)
		} else {
			f.Value.Set(f.DefValue)
		}
		f.Changed = false
	})
	var out bytes.Buffer
	rootCmd.SetOut(&out)
	defer rootCmd.SetOut(nil)
	code := run(append([]string{name}, args...))
	return out.String(), code
}

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
