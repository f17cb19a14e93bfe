package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/kto"
)

// kto rows as written, read independently of inspect.
func ktoRows(t *testing.T, dir, split string) []kto.KTORow {
	t.Helper()
	m, err := export.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	var rows []kto.KTORow
	for _, fi := range m.Files {
		if fi.Kind == export.KindKTO && fi.Split == split && fi.Format == export.FormatParquet {
			part, err := export.ReadAll[kto.KTORow](filepath.Join(dir, fi.Path))
			if err != nil {
				t.Fatal(err)
			}
			rows = append(rows, part...)
		}
	}
	return rows
}

func between(s, open, close string) (string, bool) {
	i := strings.Index(s, open)
	if i < 0 {
		return "", false
	}
	s = s[i+len(open):]
	j := strings.Index(s, close)
	if j < 0 {
		return "", false
	}
	return s[:j], true
}

func TestInspectCommand(t *testing.T) {
	dir := prepOutDir(t, "--shard-rows", "40")
	rows := ktoRows(t, dir, "train")
	n := 57 // in the second shard
	want := rows[n]

	out, code := runOutCmd(t, "inspect", dir, "--row", fmt.Sprint(n))
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	for _, s := range []string{"kto/train-00001-of-", "row 17 (kto/train row 57)", want.Source, "MAX", "kto_packed/train"} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q", s)
		}
	}
	if got, ok := between(out, "[/INST]"+markOpen, markClose); !ok || !strings.HasSuffix(want.Prompt, "[/INST]") || got != want.Completion {
		t.Errorf("stored text: marked completion %q, want %q", got, want.Completion)
	}

	// Decoding the ids with the tokenizer that made them gives back the rendered completion:
	// what the markers enclose is exactly what takes the loss.
	out, code = runOutCmd(t, "inspect", dir, "--row", fmt.Sprint(n), "--tokenizer", filepath.Join(demoTokenizer, "tokenizer.model"))
	if code != 0 {
		t.Fatalf("--tokenizer: exit %d\n%s", code, out)
	}
	decoded := out[strings.Index(out, "decoded:"):]
	if got, ok := between(decoded, markOpen, markClose); !ok || got != want.Completion {
		t.Errorf("decoded: marked completion %q, want %q", got, want.Completion)
	}
}

func TestInspectCommandUsage(t *testing.T) {
	dir := prepOutDir(t)
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"inspect"}, 2},
		{[]string{"inspect", dir, "--row", "100000"}, 2},
		{[]string{"inspect", dir, "--row", "-1"}, 2},
		{[]string{"inspect", dir, "--split", "nope"}, 2},
		{[]string{"inspect", dir, "--tokenizer", filepath.Join(t.TempDir(), "missing.model")}, 1},
		{[]string{"inspect", t.TempDir()}, 1},
	} {
		if _, code := runOutCmd(t, tc.args[0], tc.args[1:]...); code != tc.code {
			t.Errorf("%v: exit %d, want %d", tc.args, code, tc.code)
		}
	}
}
