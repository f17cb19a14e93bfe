package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestShardAndMergeCLI: prep --num-shards 2 twice, then merge, gives a directory that
// verifies and counts every row of the input once; bad shard flags and inputs that are not
// one run's shards are usage errors.
func TestShardAndMergeCLI(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.jsonl")
	if code, _ := runCLI(t, "gen", "--rows", "400", "--seed", "3", "--out", in); code != 0 {
		t.Fatalf("gen: exit %d", code)
	}
	var outs []string
	var read int64
	for i := 0; i < 2; i++ {
		out := filepath.Join(dir, fmt.Sprint("s", i))
		code, stdout := runCLI(t, "prep", "--offline", "--no-progress", "--json", "--input", in, "--out", out,
			"--test-frac", "0.1", "--num-shards", "2", "--shard-index", fmt.Sprint(i))
		if code != 0 {
			t.Fatalf("shard %d: exit %d", i, code)
		}
		var m struct{ Counts struct{ Read int64 } }
		if err := json.Unmarshal([]byte(stdout), &m); err != nil {
			t.Fatal(err)
		}
		read += m.Counts.Read
		outs = append(outs, out)
	}
	merged := filepath.Join(dir, "merged")
	code, stdout := runCLI(t, append([]string{"merge", "--out", merged}, outs...)...)
	if code != 0 {
		t.Fatalf("merge: exit %d", code)
	}
	if !strings.Contains(stdout, "rows read 400,") || !strings.Contains(stdout, "verified") || read != 400 {
		t.Errorf("merge says %q; the shards read %d rows", stdout, read)
	}
	if code, _ := runCLI(t, "verify", merged); code != 0 {
		t.Errorf("verify merged: exit %d", code)
	}
	// Again without --force: a usage error; with it, fine.
	if code, _ := runCLI(t, append([]string{"merge", "--out", merged}, outs...)...); code != 2 {
		t.Errorf("merge into a finished directory: exit %d, want 2", code)
	}
	if code, _ := runCLI(t, append([]string{"merge", "--force", "--copy", "--out", merged}, outs...)...); code != 0 {
		t.Errorf("merge --force --copy: exit %d", code)
	}
	for _, args := range [][]string{
		{"merge", "--out", filepath.Join(dir, "m1"), outs[0]},            // a shard is missing
		{"merge", "--out", filepath.Join(dir, "m2"), outs[0], outs[0]},   // twice the same shard
		{"merge", outs[0], outs[1]},                                      // no --out
		{"prep", "--offline", "--num-shards", "2", "--shard-index", "2"}, // index out of range
		{"prep", "--offline", "--num-shards", "0"},
	} {
		if code, _ := runCLI(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}
