package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/internal/outdir"
)

// Output-path safety (issue 13): outputs never touch inputs or files the run did not make,
// --force deletes only what a previous run's manifest lists, an identical re-run replaces
// its own run, and one run at a time holds an output directory.

// safetyEnv is a directory with an input file and helpers to look at what changed.
type safetyEnv struct {
	dir, in string
	inBytes []byte
}

func newSafetyEnv(t *testing.T) *safetyEnv {
	t.Helper()
	dir := t.TempDir()
	in := filepath.Join(dir, "data.jsonl")
	b, err := os.ReadFile("../../testdata/broken.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(in, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return &safetyEnv{dir: dir, in: in, inBytes: b}
}

// inputIntact fails the test when the input changed or vanished.
func (e *safetyEnv) inputIntact(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile(e.in)
	if err != nil || !bytes.Equal(b, e.inBytes) {
		t.Fatalf("the input %s was changed or removed (err %v, %d bytes, had %d)", e.in, err, len(b), len(e.inBytes))
	}
}

func putFile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func fileIs(t *testing.T, p, want string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil || string(b) != want {
		t.Errorf("%s: %q (err %v), want it kept as %q", p, b, err, want)
	}
}

func prepArgs(extra ...string) []string {
	return append([]string{"prep", "--offline", "--no-progress"}, extra...)
}

// TestOutputSafety is one case per way an output could hit an input or a user's file.
func TestOutputSafety(t *testing.T) {
	type check func(t *testing.T, e *safetyEnv, out string)
	cases := []struct {
		name  string
		setup func(t *testing.T, e *safetyEnv, out string) []string // the prep arguments
		code  int
		want  []string // substrings of stderr
		after check
	}{
		{"--rejects is the input", func(t *testing.T, e *safetyEnv, out string) []string {
			return prepArgs("-i", e.in, "--out", out, "--rejects", e.in)
		}, 2, []string{"--rejects", "data.jsonl", "is the input"}, nil},
		{"--report is the input", func(t *testing.T, e *safetyEnv, out string) []string {
			return prepArgs("-i", e.in, "--out", out, "--report="+e.in)
		}, 2, []string{"--report", "is the input"}, nil},
		{"--rejects is a symlink to the input", func(t *testing.T, e *safetyEnv, out string) []string {
			link := filepath.Join(e.dir, "link.jsonl")
			if err := os.Symlink(e.in, link); err != nil {
				t.Skip(err)
			}
			return prepArgs("-i", e.in, "--out", out, "--rejects", link)
		}, 2, []string{"link.jsonl", "is the input", "data.jsonl"}, nil},
		{"--rejects is a hard link to the input", func(t *testing.T, e *safetyEnv, out string) []string {
			hl := filepath.Join(e.dir, "hard.jsonl")
			if err := os.Link(e.in, hl); err != nil {
				t.Skip(err)
			}
			return prepArgs("-i", e.in, "--out", out, "--rejects", hl)
		}, 2, []string{"hard.jsonl", "is the input"}, nil},
		{"--rejects is someone's file outside OUT", func(t *testing.T, e *safetyEnv, out string) []string {
			putFile(t, filepath.Join(e.dir, "notes.txt"), "mine")
			return prepArgs("-i", e.in, "--out", out, "--rejects", filepath.Join(e.dir, "notes.txt"))
		}, 2, []string{"notes.txt", "exists", "does not replace it"}, func(t *testing.T, e *safetyEnv, out string) {
			fileIs(t, filepath.Join(e.dir, "notes.txt"), "mine")
		}},
		{"--report is someone's file outside OUT", func(t *testing.T, e *safetyEnv, out string) []string {
			putFile(t, filepath.Join(e.dir, "page.html"), "<html>mine</html>")
			return prepArgs("-i", e.in, "--out", out, "--report="+filepath.Join(e.dir, "page.html"))
		}, 2, []string{"page.html", "does not replace it"}, func(t *testing.T, e *safetyEnv, out string) {
			fileIs(t, filepath.Join(e.dir, "page.html"), "<html>mine</html>")
		}},
		{"--rejects inside OUT under another name", func(t *testing.T, e *safetyEnv, out string) []string {
			return prepArgs("-i", e.in, "--out", out, "--rejects", filepath.Join(out, "kto", "x.jsonl"))
		}, 2, []string{"inside the output directory", "rejects.jsonl"}, nil},
		{"the input lies in OUT (prep -i OUT/rejects.jsonl --out OUT)", func(t *testing.T, e *safetyEnv, out string) []string {
			in := filepath.Join(out, "rejects.jsonl")
			putFile(t, in, string(e.inBytes))
			e.in = in
			return prepArgs("-i", in, "--out", out)
		}, 2, []string{"the input", "inside the output directory"}, nil},
		{"OUT holds foreign files (rejects.jsonl and report.html among them)", func(t *testing.T, e *safetyEnv, out string) []string {
			putFile(t, filepath.Join(out, "rejects.jsonl"), "my rejects")
			putFile(t, filepath.Join(out, "report.html"), "my page")
			putFile(t, filepath.Join(out, "kto", "train-00000-of-00001.parquet"), "not a shard")
			putFile(t, filepath.Join(out, ".tmp-spill-1"), "old style temp, not ours by name")
			return prepArgs("-i", e.in, "--out", out)
		}, 2, []string{"holds", "kto/train-00000-of-00001.parquet", "rejects.jsonl", "report.html", "even with --force"}, func(t *testing.T, e *safetyEnv, out string) {
			fileIs(t, filepath.Join(out, "rejects.jsonl"), "my rejects")
			fileIs(t, filepath.Join(out, "report.html"), "my page")
			fileIs(t, filepath.Join(out, "kto", "train-00000-of-00001.parquet"), "not a shard")
			if _, err := os.Stat(filepath.Join(out, outdir.LockName)); err == nil {
				t.Error("a refused directory got a lock file")
			}
		}},
		{"--force with a foreign file", func(t *testing.T, e *safetyEnv, out string) []string {
			if code, _, _ := runCLIErr(t, prepArgs("-i", e.in, "--out", out)...); code != 0 {
				t.Fatal("first run failed")
			}
			putFile(t, filepath.Join(out, "sft", "mine.txt"), "mine")
			return prepArgs("-i", e.in, "--out", out, "--force", "--seed", "7")
		}, 2, []string{"sft/mine.txt"}, func(t *testing.T, e *safetyEnv, out string) {
			fileIs(t, filepath.Join(out, "sft", "mine.txt"), "mine")
			if _, err := os.Stat(filepath.Join(out, export.ManifestName)); err != nil {
				t.Errorf("the refused --force removed the previous run: %v", err)
			}
		}},
		{"OUT/kto is a symlink", func(t *testing.T, e *safetyEnv, out string) []string {
			elsewhere := filepath.Join(e.dir, "elsewhere")
			putFile(t, filepath.Join(elsewhere, "keep.txt"), "keep")
			os.MkdirAll(out, 0o755)
			if err := os.Symlink(elsewhere, filepath.Join(out, "kto")); err != nil {
				t.Skip(err)
			}
			return prepArgs("-i", e.in, "--out", out)
		}, 2, []string{"kto is a symbolic link", "elsewhere"}, func(t *testing.T, e *safetyEnv, out string) {
			entries, _ := os.ReadDir(filepath.Join(e.dir, "elsewhere"))
			if len(entries) != 1 {
				t.Errorf("prep wrote through the link: %v", entries)
			}
		}},
		{"the same input twice", func(t *testing.T, e *safetyEnv, out string) []string {
			return prepArgs("-i", e.in, "-i", e.dir+string(filepath.Separator)+"."+string(filepath.Separator)+"data.jsonl", "--out", out)
		}, 2, []string{"one file", "--allow-duplicate-inputs"}, noOut},
		{"the same input twice by symlink", func(t *testing.T, e *safetyEnv, out string) []string {
			link := filepath.Join(e.dir, "again.jsonl")
			if err := os.Symlink(e.in, link); err != nil {
				t.Skip(err)
			}
			return prepArgs("-i", e.in+","+link, "--out", out)
		}, 2, []string{"again.jsonl", "one file"}, noOut},
		{"the same input twice by hard link", func(t *testing.T, e *safetyEnv, out string) []string {
			hl := filepath.Join(e.dir, "hard.jsonl")
			if err := os.Link(e.in, hl); err != nil {
				t.Skip(err)
			}
			return prepArgs("-i", e.in, "-i", hl, "--out", out)
		}, 2, []string{"hard.jsonl", "one file"}, noOut},
		{"the same input twice allowed", func(t *testing.T, e *safetyEnv, out string) []string {
			return prepArgs("-i", e.in, "-i", e.in, "--allow-duplicate-inputs", "--out", out)
		}, 0, nil, func(t *testing.T, e *safetyEnv, out string) {
			m, err := export.ReadManifest(out)
			if err != nil {
				t.Fatal(err)
			}
			lines := int64(bytes.Count(e.inBytes, []byte("\n")))
			if len(m.Inputs) != 2 || m.Counts.Read < 2*lines-2 {
				t.Errorf("read %d rows from %d inputs, want both copies (%d lines each)", m.Counts.Read, len(m.Inputs), lines)
			}
		}},
		{"a missing input before OUT exists", func(t *testing.T, e *safetyEnv, out string) []string {
			return prepArgs("-i", e.in+","+filepath.Join(e.dir, "nope.jsonl"), "--out", out)
		}, 1, []string{"nope.jsonl", "no such file"}, noOut},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newSafetyEnv(t)
			out := filepath.Join(e.dir, "out")
			args := tc.setup(t, e, out)
			code, _, stderr := runCLIErr(t, args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tc.code, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not say %q:\n%s", w, stderr)
				}
			}
			e.inputIntact(t)
			if tc.after != nil {
				tc.after(t, e, out)
			}
		})
	}
}

func noOut(t *testing.T, e *safetyEnv, out string) {
	t.Helper()
	if _, err := os.Stat(out); err == nil {
		t.Errorf("a refused run left %s behind", out)
	}
}

func verifyExit(t *testing.T, out string, want int) {
	t.Helper()
	if code, _, stderr := runCLIErr(t, "verify", out); code != want {
		t.Errorf("verify %s: exit %d, want %d\n%s", out, code, want, stderr)
	}
}

// TestOutRoot: --out / is refused, and nothing is written there. The refusal is checked on
// outdir.Open first; the command itself runs only for a user who cannot write / (as root
// a regression would write shards into /, which a test must never risk).
func TestOutRoot(t *testing.T) {
	entries, err := os.ReadDir("/")
	if err != nil || len(entries) == 0 {
		t.Skip("an empty or unreadable /")
	}
	_, hadLock := os.Stat("/" + outdir.LockName)
	d, err := outdir.Open("/", outdir.Options{Force: true})
	if err == nil {
		d.Close()
		t.Fatal("outdir.Open(\"/\") accepted the root directory")
	}
	if !errors.Is(err, outdir.ErrForeign) {
		t.Fatalf("outdir.Open(\"/\"): %v, want ErrForeign", err)
	}
	if _, err := os.Stat("/" + outdir.LockName); err == nil && hadLock != nil {
		os.Remove("/" + outdir.LockName)
		t.Fatal("a refused --out / created a lock file in /")
	}
	if os.Geteuid() == 0 {
		t.Log("running as root: the command itself is not run against /")
		return
	}
	code, _, stderr := runCLIErr(t, prepArgs("--out", "/", "--force")...)
	if code != 2 || !strings.Contains(stderr, "holds") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

// TestOutDot: --out . in a directory holding the user's files is refused (run as the built
// binary, since the working directory is the point).
func TestOutDot(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t, t.TempDir())
	dir := t.TempDir()
	putFile(t, filepath.Join(dir, "rejects.jsonl"), "mine")
	putFile(t, filepath.Join(dir, "thesis.tex"), "mine too")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, prepArgs("-i", "rejects.jsonl", "--out", ".")...)
	cmd.Dir = dir
	outb, err := cmd.CombinedOutput()
	if code := exitOf(err); code != 2 || !strings.Contains(string(outb), "inside the output directory") {
		t.Fatalf("exit %d (%v): %s", code, err, outb)
	}
	cmd = exec.CommandContext(ctx, bin, prepArgs("--out", ".")...)
	cmd.Dir = dir
	outb, err = cmd.CombinedOutput()
	if code := exitOf(err); code != 2 || !strings.Contains(string(outb), "thesis.tex") {
		t.Fatalf("exit %d (%v): %s", code, err, outb)
	}
	fileIs(t, filepath.Join(dir, "rejects.jsonl"), "mine")
	fileIs(t, filepath.Join(dir, "thesis.tex"), "mine too")
}

func exitOf(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

// TestRerunReplacesOwnRun: the same command again replaces its own finished run, rejects
// and report included, with the same bytes; another seed needs --force, which deletes only
// what the manifest lists (ref_logps/, train's cache, stays).
func TestRerunReplacesOwnRun(t *testing.T) {
	e := newSafetyEnv(t)
	out := filepath.Join(e.dir, "out")
	args := prepArgs("-i", e.in, "--out", out, "--report", "--test-frac", "0.2")
	for i := 0; i < 2; i++ {
		if code, _, stderr := runCLIErr(t, args...); code != 0 {
			t.Fatalf("run %d: exit %d\n%s", i+1, code, stderr)
		}
	}
	first := treeBytes(t, out)
	if code, _, stderr := runCLIErr(t, args...); code != 0 {
		t.Fatalf("run 3: exit %d\n%s", code, stderr)
	}
	if second := treeBytes(t, out); !sameTreeBytes(first, second) {
		t.Errorf("an identical re-run changed the directory")
	}
	putFile(t, filepath.Join(out, "ref_logps", "train.json"), "{}")
	other := prepArgs("-i", e.in, "--out", out, "--seed", "9")
	if code, _, stderr := runCLIErr(t, other...); code != 2 || !strings.Contains(stderr, "--force") {
		t.Fatalf("another seed without --force: exit %d\n%s", code, stderr)
	}
	if code, _, stderr := runCLIErr(t, append(other, "--force")...); code != 0 {
		t.Fatalf("--force: exit %d\n%s", code, stderr)
	}
	fileIs(t, filepath.Join(out, "ref_logps", "train.json"), "{}")
	if _, err := os.Stat(filepath.Join(out, "report.html")); err == nil {
		t.Error("--force kept the previous run's report.html")
	}
	verifyExit(t, out, 0)
}

// TestRejectsOutsideOut: --rejects outside OUT is recorded relative to OUT, so verify finds
// and checks it from any working directory, and an identical re-run may replace it.
func TestRejectsOutsideOut(t *testing.T) {
	e := newSafetyEnv(t)
	out := filepath.Join(e.dir, "out")
	rej := filepath.Join(e.dir, "side", "rejects.jsonl")
	args := prepArgs("-i", e.in, "--out", out, "--rejects", rej)
	for i := 0; i < 2; i++ {
		if code, _, stderr := runCLIErr(t, args...); code != 0 {
			t.Fatalf("run %d: exit %d\n%s", i+1, code, stderr)
		}
	}
	m, err := export.ReadManifest(out)
	if err != nil {
		t.Fatal(err)
	}
	if m.Rejects == nil || m.Rejects.Path != "../side/rejects.jsonl" || m.Counts.Rejected == 0 {
		t.Fatalf("manifest rejects %+v (rejected %d), want path ../side/rejects.jsonl", m.Rejects, m.Counts.Rejected)
	}
	verifyExit(t, out, 0)
	// A damaged outside rejects file is found.
	b, _ := os.ReadFile(rej)
	os.WriteFile(rej, append(b, b[:len(b)/2]...), 0o644)
	verifyExit(t, out, 1)
}

// TestLockedOut: a directory another ktoloader holds is refused at once, naming its pid, by
// prep, merge and train; one that a train reads (shared lock) is refused to prep.
func TestLockedOut(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	os.MkdirAll(out, 0o755)
	l, err := outdir.LockExclusive(out)
	if err != nil {
		t.Fatal(err)
	}
	inUse := fmt.Sprintf("in use by another ktoloader (pid %d)", os.Getpid())
	for _, args := range [][]string{
		prepArgs("--out", out),
		{"merge", out, "--out", out},
		{"train", "--data", out},
	} {
		if code, _, stderr := runCLIErr(t, args...); code != 1 || !strings.Contains(stderr, inUse) {
			t.Errorf("%v on a locked directory: exit %d, stderr %q, want 1 and %q", args, code, stderr, inUse)
		}
	}
	l.Release()
	s, err := outdir.LockShared(out)
	if err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runCLIErr(t, prepArgs("--out", out)...)
	s.Release()
	if code != 1 || !strings.Contains(stderr, "train is reading it") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if code, _, stderr := runCLIErr(t, prepArgs("--out", out)...); code != 0 {
		t.Fatalf("after release: exit %d\n%s", code, stderr)
	}
}

// TestConcurrentPreps starts a prep that holds its output directory (it reads its rows from
// a pipe the test keeps open) and, while it does, a second prep into the same directory
// (prep vs prep, prep vs prep --force, prep --force vs prep): each is refused at once with a clear message; the first then finishes and
// its output verifies. Every wait has a deadline: a hang fails loudly.
func TestConcurrentPreps(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	if runtime.GOOS == "windows" {
		t.Skip("flock semantics")
	}
	dir := t.TempDir()
	bin := buildBinary(t, dir)
	in := filepath.Join(dir, "in.jsonl")
	writeCrashInput(t, in, 600)
	rows, err := os.ReadFile(in)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, pair := range [][2][]string{{nil, nil}, {nil, {"--force"}}, {{"--force"}, nil}} {
		first, second := pair[0], pair[1]
		t.Run(fmt.Sprintf("prep %v then prep %v", first, second), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			a := exec.CommandContext(ctx, bin, append(prepArgs("-i", "-", "--out", out, "--workers", "2"), first...)...)
			stdin, err := a.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			var aErr bytes.Buffer
			a.Stderr = &aErr
			if err := a.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- a.Wait() }()
			defer func() {
				if a.ProcessState == nil {
					a.Process.Kill()
				}
			}()
			stdin.Write(rows[:len(rows)/2])
			// Wait until the first run holds the lock: its pid is in the lock file.
			lockFile := filepath.Join(out, outdir.LockName)
			want := fmt.Sprintf("%d ", a.Process.Pid)
			for deadline := time.Now().Add(time.Minute); ; {
				if b, _ := os.ReadFile(lockFile); strings.HasPrefix(string(b), want) {
					break
				}
				select {
				case err := <-done:
					t.Fatalf("the first prep ended before it held the lock: %v\n%s", err, aErr.String())
				case <-time.After(5 * time.Millisecond):
				}
				if time.Now().After(deadline) {
					t.Fatalf("the first prep did not lock %s within a minute\n%s", out, aErr.String())
				}
			}
			b := exec.CommandContext(ctx, bin, append(prepArgs("-i", in, "--out", out), second...)...)
			bOut, bErr := b.CombinedOutput()
			if code := exitOf(bErr); code != 1 || !strings.Contains(string(bOut), fmt.Sprintf("in use by another ktoloader (pid %d)", a.Process.Pid)) {
				t.Errorf("second prep while the first runs: exit %d (%v), want 1 and \"in use … (pid %d)\":\n%s", code, bErr, a.Process.Pid, bOut)
			}
			stdin.Write(rows[len(rows)/2:])
			stdin.Close()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("the first prep failed: %v\n%s", err, aErr.String())
				}
			case <-ctx.Done():
				t.Fatal("the first prep did not finish within the test's deadline")
			}
			vOut, vErr := exec.CommandContext(ctx, bin, "verify", out).CombinedOutput()
			if vErr != nil {
				t.Fatalf("the first prep's output does not verify: %v\n%s", vErr, vOut)
			}
			// Once it is done the second command runs: --force replaces, plain prep is another
			// run (other inputs by name) and is refused as a finished run.
			c := exec.CommandContext(ctx, bin, append(prepArgs("-i", in, "--out", out), second...)...)
			cOut, cErr := c.CombinedOutput()
			wantCode := 2
			if len(second) > 0 {
				wantCode = 0
			}
			if code := exitOf(cErr); code != wantCode {
				t.Errorf("the second command after the first finished: exit %d, want %d\n%s", code, wantCode, cOut)
			}
		})
	}
}

// treeBytes maps every file under dir (slash paths) to its bytes.
func treeBytes(t *testing.T, dir string) map[string]string {
	t.Helper()
	got := map[string]string{}
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(dir, p)
		got[filepath.ToSlash(rel)] = string(b)
		return nil
	})
	return got
}

func sameTreeBytes(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestStandaloneOutputs: validate --rejects, report --html and score --out, which have no output
// directory, never replace an input, a manifest or a user's file, and replace their own.
func TestStandaloneOutputs(t *testing.T) {
	e := newSafetyEnv(t)
	out := filepath.Join(e.dir, "out")
	if code, _, stderr := runCLIErr(t, prepArgs("-i", e.in, "--out", out)...); code != 0 {
		t.Fatalf("prep: exit %d\n%s", code, stderr)
	}
	manifest, _ := os.ReadFile(filepath.Join(out, export.ManifestName))
	putFile(t, filepath.Join(e.dir, "notes.txt"), "mine")
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"validate --rejects the input", []string{"validate", "-i", e.in, "--rejects", e.in}, 2, "is the input"},
		{"validate --rejects a user's file", []string{"validate", "-i", e.in, "--rejects", filepath.Join(e.dir, "notes.txt")}, 2, "does not replace it"},
		{"validate --rejects a new file", []string{"validate", "-i", e.in, "--rejects", filepath.Join(e.dir, "v.jsonl")}, 0, ""},
		{"validate --rejects its own file again", []string{"validate", "-i", e.in, "--rejects", filepath.Join(e.dir, "v.jsonl")}, 0, ""},
		{"report --html the manifest", []string{"report", out, "--html", filepath.Join(out, export.ManifestName)}, 2, "is the input"},
		{"report --html a user's file", []string{"report", out, "--html", filepath.Join(e.dir, "notes.txt")}, 2, "does not replace it"},
		{"score --out a shard it reads", []string{"score", "--data", out, "--model", "tiny", "--out", filepath.Join(out, "kto", "train-00000-of-00001.parquet")}, 2, "is the input"},
		{"report twice", []string{"report", out}, 0, ""},
		{"report twice (2)", []string{"report", out}, 0, ""},
	}
	for _, tc := range cases {
		code, _, stderr := runCLIErr(t, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("%s: exit %d, want %d and %q:\n%s", tc.name, code, tc.code, tc.want, stderr)
		}
	}
	e.inputIntact(t)
	fileIs(t, filepath.Join(e.dir, "notes.txt"), "mine")
	fileIs(t, filepath.Join(out, export.ManifestName), string(manifest))
	verifyExit(t, out, 0)
}
