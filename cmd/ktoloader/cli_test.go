package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// runIO runs the CLI in-process through run, as main does, on a fresh command tree with
// stdin holding in, and returns the exit code, stdout and stderr (run's final
// "ktoloader: …" line included).
func runIO(t *testing.T, in string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, stdio{strings.NewReader(in), &out, &errb})
	return code, out.String(), errb.String()
}

// runCLI runs the CLI in-process and returns its exit code and stdout; stderr is logged
// when the run fails.
func runCLI(t *testing.T, args ...string) (int, string) {
	t.Helper()
	code, out, errs := runIO(t, "", args...)
	if code != 0 {
		t.Logf("%v: stderr: %s", args, errs)
	}
	return code, out
}

// runCLIErr runs the CLI in-process and returns its exit code, stdout and stderr.
func runCLIErr(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return runIO(t, "", args...)
}

// runOutCmd runs `ktoloader name args…` and returns stdout and the exit code.
func runOutCmd(t *testing.T, name string, args ...string) (string, int) {
	t.Helper()
	code, out := runCLI(t, append([]string{name}, args...)...)
	return out, code
}

// allFlags lists every flag of c's tree by "command path --name".
func allFlags(c *cobra.Command) map[string]*pflag.Flag {
	m := map[string]*pflag.Flag{}
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		for _, fs := range []*pflag.FlagSet{c.Flags(), c.PersistentFlags()} {
			fs.VisitAll(func(f *pflag.Flag) { m[c.CommandPath()+" --"+f.Name] = f })
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(c)
	return m
}

// TestRootTreesShareNoFlags: two trees from newRootCmd hold their flag values apart, so
// nothing one run parses reaches another. A flag bound to a package variable gives the same
// Value pointer in both trees (pflag's values are the bound variable's address); one bound
// to shared state some other way shows when setting it in one tree changes the other.
func TestRootTreesShareNoFlags(t *testing.T) {
	a, b := allFlags(newRootCmd()), allFlags(newRootCmd())
	if len(a) < 100 || len(a) != len(b) {
		t.Fatalf("%d and %d flags: want the same tree, of over 100 flags", len(a), len(b))
	}
	// A value unlike any default of its type.
	other := map[string]string{"bool": "true", "string": "x-set", "int": "7", "int64": "7",
		"uint64": "7", "float64": "0.25", "stringSlice": "x-set"}
	for name, fa := range a {
		fb := b[name]
		if fb == nil {
			t.Errorf("%s: only in the first tree", name)
			continue
		}
		if fa == fb || reflect.ValueOf(fa.Value).Pointer() == reflect.ValueOf(fb.Value).Pointer() {
			t.Errorf("%s: the two trees share its value", name)
			continue
		}
		v, ok := other[fa.Value.Type()]
		if !ok {
			t.Errorf("%s: no test value for type %s", name, fa.Value.Type())
			continue
		}
		if fa.Value.Type() == "bool" && fa.DefValue == "true" {
			v = "false"
		}
		before := fb.Value.String()
		if err := fa.Value.Set(v); err != nil {
			t.Errorf("%s: set %q: %v", name, v, err)
			continue
		}
		if fa.Value.String() == before {
			t.Errorf("%s: setting %q left it at %q: the test value is no test", name, v, before)
		}
		if got := fb.Value.String(); got != before {
			t.Errorf("%s: setting it in one tree changed the other from %q to %q", name, before, got)
		}
	}
}

// TestSequentialRunsDoNotLeakFlags: flags given to one run are gone in the next run in the
// same process. prep --strict fails on a bad row; the same prep without it then accepts the
// file (rejects alone are no failure), and encode --bos then without gives ids without <s>.
func TestSequentialRunsDoNotLeakFlags(t *testing.T) {
	dir := t.TempDir()
	prep := func(out string, extra ...string) []string {
		return append([]string{"prep", "--offline", "--no-progress", "--tokenizer", demoTokenizer,
			"--input", "../../testdata/broken.jsonl", "--out", filepath.Join(dir, out)}, extra...)
	}
	if code, _, stderr := runCLIErr(t, prep("strict", "--strict")...); code != 1 || !strings.Contains(stderr, "--strict") {
		t.Fatalf("prep --strict on bad rows: exit %d, want 1; stderr %q", code, stderr)
	}
	if code, _ := runCLI(t, prep("default")...); code != 0 {
		t.Errorf("prep without --strict after a run with it: exit %d, want 0", code)
	}
	code, withBOS, _ := runIO(t, `"hi"`+"\n", "encode", "--tokenizer", demoTokenizer, "--bos")
	if code != 0 || !strings.HasPrefix(withBOS, "[1,") {
		t.Fatalf("encode --bos: exit %d, %q, want ids starting with 1", code, withBOS)
	}
	code, plain, _ := runIO(t, `"hi"`+"\n", "encode", "--tokenizer", demoTokenizer)
	if code != 0 || plain == withBOS || "[1,"+strings.TrimPrefix(plain, "[") != withBOS {
		t.Errorf("encode after encode --bos: exit %d, %q; want %q without the 1", code, plain, withBOS)
	}
}

// TestRunExitCodes: run maps each outcome to the exit code the README documents (0
// success, 1 the run failed, 2 usage error) and prints the error once, after "ktoloader:".
func TestRunExitCodes(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(dir, "foreign")
	if err := os.MkdirAll(foreign, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(foreign, "notes.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	prep := []string{"prep", "--offline", "--no-progress", "--tokenizer", demoTokenizer}
	for _, c := range []struct {
		name    string
		args    []string
		want    int
		mention string
	}{
		{"help", []string{"--help"}, 0, ""},
		{"sample prep", append(prep, "--out", filepath.Join(dir, "ok")), 0, ""},
		{"unknown command", []string{"no-such-command"}, 2, `unknown command "no-such-command"`},
		{"unknown flag", []string{"prep", "--no-such-flag"}, 2, "unknown flag: --no-such-flag"},
		{"bad flag value", []string{"validate", "--max-line-bytes", "many"}, 2, "--max-line-bytes"},
		{"stray argument", []string{"prep", "extra"}, 2, `unknown command "extra"`},
		{"missing argument", []string{"dump"}, 2, "accepts 1 arg(s)"},
		{"flag check", []string{"prep", "--num-shards", "0"}, 2, "--num-shards must be at least 1"},
		{"another package's usage error", append(prep, "--out", foreign, "--force"), 2, "ktoloader did not write"},
		{"strict", append(prep, "--strict", "--input", "../../testdata/broken.jsonl", "--out", filepath.Join(dir, "s")), 1, "broken.jsonl:2"},
		{"out is a file", append(prep, "--out", file), 1, "not a directory"},
		{"not a run", []string{"verify", dir}, 1, dir},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, _, stderr := runCLIErr(t, c.args...)
			if code != c.want {
				t.Errorf("exit %d, want %d; stderr %q", code, c.want, stderr)
			}
			if c.want == 0 {
				return
			}
			if strings.Count(stderr, "ktoloader: ") != 1 || !strings.Contains(stderr, c.mention) {
				t.Errorf("stderr %q: want one ktoloader: line naming %q", stderr, c.mention)
			}
		})
	}
}

// TestExitCodeFromTypes: the code comes from the error's type, wherever it sits in the
// chain, never from its text.
func TestExitCodeFromTypes(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{usagef("bad"), 2},
		{fmt.Errorf("prep: %w", usagef("bad")), 2},
		{errors.Join(errors.New("a"), usageError{errors.New("b")}), 2},
		{errors.New("unknown flag: --x"), 1},
		{fmt.Errorf("wrapped: %w", errors.New("usage error")), 1},
		{notUsage{}, 1},
	} {
		if got := exitCode(c.err); got != c.want {
			t.Errorf("exitCode(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}

// notUsage has the method exitCode looks for, answering no.
type notUsage struct{}

func (notUsage) Error() string    { return "not a usage error" }
func (notUsage) UsageError() bool { return false }
