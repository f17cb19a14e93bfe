package pipeline

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/kto"
	"github.com/ktoloader/ktoloader/loader"
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

// TestHugeRowRejectedBeforeTokenizing: a row whose text alone proves it cannot fit (2 MB of
// tool-call arguments against max_len 1024) is rejected too_long with a lower bound ("at
// least N tokens") rather than a count, between two rows that are written.
func TestHugeRowRejectedBeforeTokenizing(t *testing.T) {
	small := `{"conversations":[{"role":"user","content":"What is the weather in Paris?"},{"role":"assistant","content":"Let me check."}],"label":true,"behavior":"b"}`
	huge := `{"conversations":[{"role":"user","content":"Store this."},{"role":"assistant","content":"","tool_calls":[{"id":"abcdefghi","type":"function","function":{"name":"store","arguments":"{\"blob\": \"` +
		strings.Repeat("lorem ipsum ", 170_000) + `\"}"}}]}],"label":false,"behavior":"b"}`
	data := []byte(small + "\n" + huge + "\n" + small + "\n")
	in := []Input{{Name: "huge.jsonl", Open: func(c loader.Config) (*loader.Reader, error) {
		return loader.NewReader(bytes.NewReader(data), "huge.jsonl", c)
	}}}
	out := filepath.Join(t.TempDir(), "out")
	m := run(t, Config{Inputs: in, Tokenizer: demoTok(t), Out: out, KTO: kto.Config{MaxLen: 1024}})
	if c := m.Counts; c.Read != 3 || c.Written != 2 || c.Reasons["too_long"] != 1 {
		t.Fatalf("counts %+v", c)
	}
	rej, err := os.ReadFile(filepath.Join(out, export.RejectsName))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(rej, []byte(`"line":2`)) || !bytes.Contains(rej, []byte("at least")) {
		t.Errorf("rejects.jsonl does not name line 2 with a lower bound: %.300s", rej)
	}
}
