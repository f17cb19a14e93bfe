package main

import (
	"bytes"
	"compress/gzip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ktoloader/ktoloader/internal/shared"
)

// TestLoaderExitCodes runs the built binary on bad input files: each is exit 1 with a
// message naming the file, never a panic or a goroutine dump (which would exit 2 too, so
// the stderr is checked); usage errors are exit 2.
func TestLoaderExitCodes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := buildBinary(t, dir)
	sample, err := os.ReadFile("../../testdata/sample.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(sample)
	zw.Close()
	flipped := bytes.Clone(gz.Bytes())
	flipped[len(flipped)/2] ^= 0x55 // a damaged deflate stream or a failing checksum
	// A valid Parquet file of other columns: a finished run's kto/ shard.
	runOut := filepath.Join(dir, "run")
	if out, err := exec.Command(bin, "prep", "--offline", "--no-progress", "--out", runOut).CombinedOutput(); err != nil {
		t.Fatalf("prep of the sample: %v\n%s", err, out)
	}
	shard := filepath.Join(runOut, "kto", "train-00000-of-00001.parquet") // a valid Parquet file, cut below
	shardBytes, _ := os.ReadFile(shard)
	adir := filepath.Join(dir, "adir.jsonl")
	os.Mkdir(adir, 0o755)
	bad := map[string]string{
		"missing":         filepath.Join(dir, "nope.jsonl"),
		"directory":       adir,
		"truncated gzip":  write("cut.jsonl.gz", gz.Bytes()[:gz.Len()/2]),
		"flipped gzip":    write("flipped.jsonl.gz", flipped),
		"garbage parquet": write("garbage.parquet", []byte("PAR1 not really parquet PAR1")),
		"cut parquet":     write("cut.parquet", shardBytes[:len(shardBytes)*2/3]),
	}
	// Choices recorded by what the test does not list: a .gz name on plain JSONL is read by
	// content (exit 0), and a valid Parquet file of other columns rejects each row as
	// missing_field (exit 0 with the no_rows_written warning), as a JSONL file of such rows
	// does.
	commands := []string{"prep", "validate", "render"}
	tok := ""
	if sh := shared.Find(); sh != "" {
		tok = filepath.Join(sh, "tokenizers", "mistral-7b-v0.3")
	} else {
		t.Log("render not checked: it needs the Mistral tokenizer in the shared folder")
		commands = commands[:2]
	}
	for _, command := range commands {
		for name, input := range bad {
			args := []string{command, "--input", input}
			switch command {
			case "prep":
				args = append(args, "--offline", "--no-progress", "--out", filepath.Join(dir, "out-"+strings.ReplaceAll(name, " ", "-")))
			case "render":
				args = append(args, "--tokenizer", tok)
			}
			checkExit(t, bin, args, 1, input)
		}
		// --strict stops at the first bad row, naming its file and line.
		checkExit(t, bin, append([]string{command, "--strict", "--input", "../../testdata/broken.jsonl"}, extra(command, dir, tok)...), 1, "broken.jsonl:2")
	}
	for _, args := range [][]string{
		{"prep", "--no-such-flag"},
		{"validate", "--max-line-bytes", "many"},
		{"prep", "--offline", "--out", filepath.Join(dir, "u"), "--truncate", "middle"},
		{"no-such-command"},
	} {
		checkExit(t, bin, args, 2, "")
	}
}

func extra(command, dir, tok string) []string {
	switch command {
	case "prep":
		return []string{"--offline", "--no-progress", "--out", filepath.Join(dir, "strict")}
	case "render":
		return []string{"--tokenizer", tok}
	}
	return nil
}

func checkExit(t *testing.T, bin string, args []string, want int, mention string) {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stderr = &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	msg := stderr.String()
	if code != want || strings.Contains(msg, "panic") || strings.Contains(msg, "goroutine ") ||
		!strings.Contains(msg, mention) {
		t.Errorf("%v: exit %d, want %d naming %q; stderr:\n%s", args, code, want, mention, lastLines(msg, 5))
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
