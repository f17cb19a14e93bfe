package pipeline

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/kto"
)

// TestRejectsChecksummed: the manifest lists rejects.jsonl with its record count, size and
// sha256 (computed here independently), and verify reports a changed byte in it that keeps
// every record valid JSON with the same reason, which the count checks alone would miss.
func TestRejectsChecksummed(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	m := run(t, Config{Inputs: sampleInputs(), Tokenizer: demoTok(t), Out: out, KTO: kto.Config{MaxLen: 1024}})
	path := filepath.Join(out, export.RejectsName)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	ri := m.Rejects
	if ri == nil || ri.Path != export.RejectsName || ri.Rows != m.Counts.Rejected || ri.Rows == 0 ||
		ri.Bytes != int64(len(b)) || ri.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("manifest rejects %+v; file %d bytes, sha256 %x, %d rejected", ri, len(b), sum, m.Counts.Rejected)
	}
	if rep, err := export.Verify(out); err != nil || !rep.OK() {
		t.Fatalf("verify before the change: %v %+v", err, rep)
	}
	i := bytes.Index(b, []byte(`"raw":"`))
	if i < 0 {
		t.Fatal("no raw field in rejects.jsonl")
	}
	i += len(`"raw":"`)
	for b[i] == '\\' || b[i] == '"' { // change a plain character, keeping the JSON valid
		i++
	}
	b[i] ^= 0x01
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err := export.Verify(out)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, v := range rep.Violations {
		found = found || (v.File == export.RejectsName && v.Check == export.CheckSHA256)
	}
	if !found {
		t.Errorf("verify missed a changed byte in rejects.jsonl: %+v", rep.Violations)
	}
}
