package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/ktoloader/ktoloader/internal/gen"
)

// TestGen: the command's flags: --rows and --seed reach the generator (its rows are
// internal/gen's tests), --out writes the same bytes as stdout, --rows 0 writes nothing,
// --rows -1 is a usage error.
func TestGen(t *testing.T) {
	code, a := runCLI(t, "gen", "--rows", "300", "--seed", "7")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	var want bytes.Buffer
	if err := gen.Write(&want, 300, 7); err != nil {
		t.Fatal(err)
	}
	if a != want.String() {
		t.Fatal("gen --rows 300 --seed 7 differs from gen.Write(300, 7)")
	}

	// --out writes the same bytes to a file; --rows 0 writes nothing.
	p := filepath.Join(t.TempDir(), "g.jsonl")
	if code, _ := runCLI(t, "gen", "--rows", "300", "--seed", "7", "--out", p); code != 0 {
		t.Fatalf("--out: exit %d", code)
	}
	if b, err := os.ReadFile(p); err != nil || string(b) != a {
		t.Errorf("--out file differs from stdout (%v)", err)
	}
	if _, z := runCLI(t, "gen", "--rows", "0"); z != "" {
		t.Errorf("--rows 0 wrote %d bytes", len(z))
	}
	if code, _ := runCLI(t, "gen", "--rows", "-1"); code != 2 {
		t.Errorf("--rows -1: exit %d, want 2", code)
	}
}
