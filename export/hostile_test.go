package export

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestVerifyEveryFileEveryRegion flips one byte at a time in each listed shard of both
// formats: in the magic and header (first 8 bytes), the footer (last 8) and 16 places
// between. Whatever the flip does to decoding, Verify must name the file with a sha256
// violation (and never stop at an earlier error).
func TestVerifyEveryFileEveryRegion(t *testing.T) {
	if testing.Short() {
		t.Skip("verifies the fixture 384 times")
	}
	f := newFixture()
	f.opt.Format = FormatBoth
	f.opt.ShardRows = 0 // one shard per kind and split: each Verify reads 12 files
	dir := t.TempDir()
	m := f.write(t, dir)
	for _, fi := range m.Files {
		p := filepath.Join(dir, filepath.FromSlash(fi.Path))
		orig := readFile(t, p)
		var at []int
		for i := 0; i < 8; i++ {
			at = append(at, i, len(orig)-1-i)
		}
		for k := 1; k <= 16; k++ {
			at = append(at, k*len(orig)/17)
		}
		for _, pos := range at {
			b := bytes.Clone(orig)
			b[pos] ^= 0x01
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			rep, err := Verify(dir)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, v := range rep.Violations {
				found = found || (v.Check == CheckSHA256 && v.File == fi.Path)
			}
			if !found {
				t.Errorf("%s: byte %d of %d flipped, no sha256 violation: %v", fi.Path, pos, len(orig), rep.Violations)
			}
		}
		if err := os.WriteFile(p, orig, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	verifyOK(t, dir)
}

// TestVerifyRejectsReasons: rejects.jsonl has no digest in the manifest, but a record whose
// reason was damaged no longer tallies with counts.reasons, which Verify checks.
func TestVerifyRejectsReasons(t *testing.T) {
	dir := t.TempDir()
	newFixture().write(t, dir)
	p := filepath.Join(dir, RejectsName)
	orig := readFile(t, p)
	damaged := bytes.Replace(orig, []byte(`"missing_label"`), []byte(`"missing_lab3l"`), 1)
	if bytes.Equal(damaged, orig) {
		t.Fatal("fixture rejects changed: no missing_label record")
	}
	if err := os.WriteFile(p, damaged, 0o644); err != nil {
		t.Fatal(err)
	}
	wantCheck(t, verifyDir(t, dir), CheckRejects, RejectsName)
}
