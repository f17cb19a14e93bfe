// Package shared locates the project's shared reference folder (../shared beside the checkout:
// real data, the Mistral tokenizer, golden outputs) for tests and benchmarks. Tests that need it
// skip with a clear message when it is absent, so `go test ./...` passes on any fresh clone.
//
// It imports nothing of this module, and only test files may import it (it imports testing).
package shared

import (
	"os"
	"path/filepath"
	"testing"
)

// EnvVar names the shared folder explicitly; it wins over the search.
const EnvVar = "KTOLOADER_SHARED"

// Find returns the shared folder, or "" when it cannot be found. It honours $KTOLOADER_SHARED,
// then looks for a "shared" folder holding DESIGN.md beside each parent of the working
// directory (tests run in their package directory, a few levels below the module root).
func Find() string {
	if d := os.Getenv(EnvVar); d != "" {
		if st, err := os.Stat(d); err == nil && st.IsDir() {
			return d
		}
		return ""
	}
	wd, err := os.Getwd()
	if err != nil {
		return ""
	}
	for dir := wd; ; {
		cand := filepath.Join(dir, "shared")
		if _, err := os.Stat(filepath.Join(cand, "DESIGN.md")); err == nil {
			return cand
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// Dir returns the shared folder or skips the test with a message naming how to provide it.
func Dir(tb testing.TB) string {
	tb.Helper()
	d := Find()
	if d == "" {
		tb.Skipf("shared reference folder not found (set %s or check out ../shared beside the repo)", EnvVar)
	}
	return d
}

// Path returns a file under the shared folder, skipping the test when it is absent.
func Path(tb testing.TB, elem ...string) string {
	tb.Helper()
	p := filepath.Join(append([]string{Dir(tb)}, elem...)...)
	if _, err := os.Stat(p); err != nil {
		tb.Skipf("shared file %s not available: %v", p, err)
	}
	return p
}
