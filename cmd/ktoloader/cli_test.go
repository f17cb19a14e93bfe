package main

import (
	"bytes"
	"strings"
	"testing"
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
