package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ktoloader/ktoloader/internal/outdir"
)

// noFinishedFiles fails when out holds a manifest or any file under a final name that is not
// byte-identical to the finished run ref (nil: no final-named file is allowed at all).
func noFinishedFiles(t *testing.T, out string, ref map[string]string) {
	t.Helper()
	for rel, sum := range snapshot(t, out) {
		switch {
		case isTemporary(rel), rel == outdir.LockName:
		case rel == "manifest.json":
			t.Errorf("%s: a failed run left manifest.json", out)
		case ref == nil || ref[rel] != sum:
			t.Errorf("%s: a failed run left %s, which looks finished", out, rel)
		}
	}
}

// TestPrepHostileInputs: inputs that end the run with exit 1, a message naming the input,
// and no finished-looking output.
func TestPrepHostileInputs(t *testing.T) {
	dir := t.TempDir()
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	sample, err := os.ReadFile("../../testdata/sample.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	w.Write(sample)
	w.Close()
	trunc := filepath.Join(dir, "cut.jsonl.gz")
	os.WriteFile(trunc, gz.Bytes()[:gz.Len()*2/3], 0o644)
	cases := []struct {
		name, input, want string
	}{
		{"directory", dir, "is a directory"},
		{"truncated gzip", trunc, "unexpected EOF"},
		{"missing file", filepath.Join(dir, "nope.jsonl"), "no such file"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, fmt.Sprint("out", i))
			code, _, stderr := runCLIErr(t, "prep", "--offline", "--no-progress", "--input", tc.input, "--out", out)
			if code != 1 || !strings.Contains(stderr, tc.want) || !strings.Contains(stderr, tc.input) {
				t.Fatalf("exit %d, stderr %q: want exit 1 and %q naming the input", code, stderr, tc.want)
			}
			noFinishedFiles(t, out, nil)
		})
	}
}

// TestPrepUnwritableOut: an output directory that cannot be made or written is exit 1 with
// the system's reason, and leaves nothing that looks finished.
func TestPrepUnwritableOut(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Run("under a regular file", func(t *testing.T) {
		code, _, stderr := runCLIErr(t, "prep", "--offline", "--no-progress", "--out", filepath.Join(file, "out"))
		if code != 1 || !strings.Contains(stderr, "not a directory") {
			t.Fatalf("exit %d, stderr %q", code, stderr)
		}
	})
	t.Run("a regular file", func(t *testing.T) {
		code, _, stderr := runCLIErr(t, "prep", "--offline", "--no-progress", "--out", file)
		if code != 1 || !strings.Contains(stderr, "not a directory") {
			t.Fatalf("exit %d, stderr %q", code, stderr)
		}
		if b, _ := os.ReadFile(file); string(b) != "x" {
			t.Error("the file given as --out was changed")
		}
	})
	t.Run("read-only directory", func(t *testing.T) {
		ro := filepath.Join(dir, "ro")
		if err := os.Mkdir(ro, 0o500); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(ro, 0o700)
		if f, err := os.Create(filepath.Join(ro, "probe")); err == nil {
			f.Close()
			os.Remove(f.Name())
			t.Skip("this user can write a 0500 directory (root): nothing to test")
		}
		code, _, stderr := runCLIErr(t, "prep", "--offline", "--no-progress", "--out", ro)
		if code != 1 || !strings.Contains(stderr, "permission denied") {
			t.Fatalf("exit %d, stderr %q", code, stderr)
		}
		noFinishedFiles(t, ro, nil)
	})
}

// TestPrepDiskFull runs prep into small tmpfs mounts (root only; skipped where mount is not
// permitted) so that the disk fills in pass one (the spill), while writing shards, and near
// the end: each is exit 1 naming ENOSPC, with no manifest and no file under a final name that
// differs from the finished run's.
func TestPrepDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("mounts tmpfs and runs prep several times")
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "in.jsonl")
	writeCrashInput(t, in, 1500)
	args := func(out string) []string {
		return []string{"prep", "--offline", "--no-progress", "--input", in, "--out", out,
			"--format", "both", "--shard-rows", "300", "--test-frac", "0.1", "--workers", "2"}
	}
	refDir := filepath.Join(dir, "ref")
	if code, _, stderr := runCLIErr(t, args(refDir)...); code != 0 {
		t.Fatalf("reference run: exit %d: %s", code, stderr)
	}
	ref := snapshot(t, refDir)
	var total int64
	filepath.Walk(refDir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			total += fi.Size()
		}
		return nil
	})
	for _, frac := range []float64{0.02, 0.5, 0.97} {
		size := int64(frac * float64(total))
		t.Run(fmt.Sprintf("%d KiB of %d", size>>10, total>>10), func(t *testing.T) {
			mnt := filepath.Join(t.TempDir(), "mnt")
			os.Mkdir(mnt, 0o755)
			if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", mnt).CombinedOutput(); err != nil {
				t.Skipf("cannot mount a tmpfs (needs root): %v %s", err, out)
			}
			defer exec.Command("umount", mnt).Run()
			out := filepath.Join(mnt, "out")
			code, _, stderr := runCLIErr(t, args(out)...)
			if code != 1 || !strings.Contains(stderr, "no space left on device") {
				t.Fatalf("exit %d, stderr %q: want exit 1 and ENOSPC", code, stderr)
			}
			noFinishedFiles(t, out, ref)
			var temps []string
			for rel := range snapshot(t, out) {
				if isTemporary(rel) {
					temps = append(temps, rel)
				}
			}
			if len(temps) > 0 {
				t.Errorf("a failed run left temporary files: %v", temps)
			}
		})
	}
}
