package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ktoloader/ktoloader/internal/outdir"
)

// Crash safety (DESIGN.md "Output directory"): files are written under temporary names
// (.tmp-…), synced and renamed when complete; manifest.json is written last; a directory
// without a manifest is an unfinished run, which the next prep cleans and redoes.
//
// The invariant checked after a SIGKILL at any moment: every file in OUT whose name is not
// temporary is byte for byte the file an uninterrupted run leaves under that name. So a
// finished-looking file is always a finished file (a shard renamed before the crash is
// complete; its siblings may be missing, which the missing manifest says), and with the
// manifest present the whole directory is the finished run. A rerun without --force then
// produces exactly the uninterrupted run's directory.

// buildBinary builds this command into dir and returns its path.
func buildBinary(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "ktoloader")
	if runtime.GOOS == "windows" {
		bin += ".exe"
	}
	cmd := exec.Command("go", "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// writeCrashInput writes n rows made from testdata/sample.jsonl, each with its first user
// message made unique (so the split has many prompt groups), and now and then a line of
// testdata/broken.jsonl (so rejects.jsonl has content).
func writeCrashInput(t *testing.T, path string, n int) {
	t.Helper()
	lines := func(p string) [][]byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var out [][]byte
		for _, l := range bytes.Split(b, []byte("\n")) {
			if len(bytes.TrimSpace(l)) > 0 {
				out = append(out, l)
			}
		}
		return out
	}
	sample := lines("../../testdata/sample.jsonl")
	broken := lines("../../testdata/broken.jsonl")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	for i := 0; i < n; i++ {
		if i%97 == 0 {
			w.Write(broken[(i/97)%len(broken)])
			w.WriteByte('\n')
			continue
		}
		var row map[string]any
		if err := json.Unmarshal(sample[i%len(sample)], &row); err != nil {
			t.Fatal(err)
		}
		msgs, _ := row["conversations"].([]any)
		if msgs == nil {
			msgs, _ = row["messages"].([]any)
		}
		for _, m := range msgs {
			if m, ok := m.(map[string]any); ok && m["role"] == "user" {
				if c, ok := m["content"].(string); ok {
					m["content"] = fmt.Sprintf("%s (request %d)", c, i)
					break
				}
			}
		}
		b, err := json.Marshal(row)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(b)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// snapshot maps every regular file under dir (slash-separated relative path) to its sha256.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return files // killed before it made the directory
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		sum := sha256.Sum256(b)
		files[filepath.ToSlash(rel)] = hex.EncodeToString(sum[:])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// isTemporary: a temporary file, or the journal of a run that has not finished (which a
// failed run must remove, and a killed one leaves for the next run to read).
func isTemporary(rel string) bool {
	return strings.HasPrefix(pathBase(rel), ".tmp-") || rel == outdir.JournalName
}

func pathBase(rel string) string { return rel[strings.LastIndexByte(rel, '/')+1:] }

// checkUnfinished asserts the crash invariant on out against the finished run ref. It
// returns whether out holds a manifest (the run finished before the kill).
func checkUnfinished(t *testing.T, out string, ref map[string]string) bool {
	t.Helper()
	got := snapshot(t, out)
	_, finished := got["manifest.json"]
	for rel, sum := range got {
		if isTemporary(rel) || rel == outdir.LockName { // the lock holds a killed run's pid
			continue
		}
		want, ok := ref[rel]
		if !ok {
			t.Errorf("%s: %s looks finished but the finished run has no such file", out, rel)
		} else if sum != want {
			t.Errorf("%s: %s looks finished but differs from the finished run's", out, rel)
		}
	}
	if finished {
		for rel := range ref {
			if _, ok := got[rel]; !ok {
				t.Errorf("%s: manifest.json present but %s missing", out, rel)
			}
		}
	}
	return finished
}

// sameTree fails unless out holds exactly ref's files, no temporaries left.
func sameTree(t *testing.T, out string, ref map[string]string) {
	t.Helper()
	got := snapshot(t, out)
	var diff []string
	for rel, sum := range got {
		if ref[rel] != sum {
			diff = append(diff, "+"+rel)
		}
	}
	for rel := range ref {
		if _, ok := got[rel]; !ok {
			diff = append(diff, "-"+rel)
		}
	}
	slices.Sort(diff)
	if len(diff) > 0 {
		t.Errorf("%s differs from the uninterrupted run: %v", out, diff)
	}
}

// TestPrepSIGKILL kills prep with SIGKILL at four seeded random moments, and at the moments that
// matter most (right after the first final-named shard appears, right after rejects.jsonl
// appears), checks the crash invariant, reruns without --force and wants the uninterrupted
// run's bytes.
func TestPrepSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs prep a dozen times (about a minute)")
	}
	if runtime.GOOS == "windows" {
		t.Skip("needs SIGKILL")
	}
	dir := t.TempDir()
	bin := buildBinary(t, dir)
	in := filepath.Join(dir, "in.jsonl")
	writeCrashInput(t, in, 3000)
	args := func(out string) []string {
		return []string{"prep", "--offline", "--no-progress", "--input", in, "--out", out,
			"--format", "both", "--shard-rows", "300", "--test-frac", "0.1", "--workers", "2"}
	}
	prep := func(out string) {
		t.Helper()
		cmd := exec.Command(bin, args(out)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("prep %s: %v\n%s", out, err, stderr.String())
		}
	}

	refDir := filepath.Join(dir, "ref")
	start := time.Now()
	prep(refDir)
	took := time.Since(start)
	ref := snapshot(t, refDir)
	shards := 0
	for rel := range ref {
		if strings.HasSuffix(rel, ".parquet") || strings.HasSuffix(rel, ".arrow") {
			shards++
		}
	}
	if _, ok := ref["rejects.jsonl"]; !ok || shards < 12 {
		t.Fatalf("the reference run should have rejects and several shards per kind: %v", ref)
	}
	t.Logf("uninterrupted run: %v, %d files", took, len(ref))

	// appeared returns a poll condition: a non-temporary file matching ok exists under out.
	appeared := func(out string, ok func(rel string) bool) func() bool {
		return func() bool {
			found := false
			filepath.WalkDir(out, func(p string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					rel, _ := filepath.Rel(out, p)
					rel = filepath.ToSlash(rel)
					if !isTemporary(rel) && ok(rel) {
						found = true
						return fs.SkipAll
					}
				}
				return nil
			})
			return found
		}
	}
	rng := rand.New(rand.NewPCG(20240607, 7))
	type trial struct {
		name string
		when func(out string) (wait time.Duration, cond func() bool)
	}
	trials := []trial{
		{"first final shard", func(out string) (time.Duration, func() bool) {
			return 0, appeared(out, func(rel string) bool { return strings.Contains(rel, "-of-") })
		}},
		{"rejects.jsonl committed", func(out string) (time.Duration, func() bool) {
			return 0, appeared(out, func(rel string) bool { return rel == "rejects.jsonl" })
		}},
	}
	for i := 0; i < 4; i++ {
		d := time.Duration(rng.Float64() * 1.1 * float64(took))
		trials = append(trials, trial{fmt.Sprintf("after %v", d.Round(time.Millisecond)), func(string) (time.Duration, func() bool) {
			return d, nil
		}})
	}
	for i, tr := range trials {
		out := filepath.Join(dir, fmt.Sprintf("kill%d", i))
		cmd := exec.Command(bin, args(out)...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		wait, cond := tr.when(out)
		var ranOut error
		if cond == nil {
			select {
			case <-time.After(wait):
			case ranOut = <-exited:
				exited <- ranOut
			}
		} else {
		poll:
			for !cond() {
				select {
				case ranOut = <-exited:
					exited <- ranOut
					break poll
				case <-time.After(time.Millisecond):
				}
			}
		}
		cmd.Process.Signal(syscall.SIGKILL)
		err := <-exited
		killed := false
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				killed = true
			}
		}
		finished := checkUnfinished(t, out, ref)
		final, temp := 0, 0
		for rel := range snapshot(t, out) {
			if isTemporary(rel) {
				temp++
			} else {
				final++
			}
		}
		t.Logf("trial %d (%s): killed=%v, manifest=%v, %d final-named and %d temporary files left",
			i, tr.name, killed, finished, final, temp)
		if !killed && err != nil {
			t.Fatalf("trial %d: prep failed on its own: %v", i, err)
		}
		if finished {
			continue // checkUnfinished compared every file with the finished run
		}
		prep(out) // no --force: a directory without a manifest is redone
		sameTree(t, out, ref)
	}
}
