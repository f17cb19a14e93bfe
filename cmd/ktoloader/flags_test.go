package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestExpandOptionalValues(t *testing.T) {
	for _, c := range []struct{ in, want []string }{
		{[]string{"prep", "--report", "/tmp/r.html"}, []string{"prep", "--report", "/tmp/r.html"}},
		{[]string{"prep", "--report=/tmp/r.html"}, []string{"prep", "--report=/tmp/r.html"}},
		{[]string{"prep", "--report"}, []string{"prep", "--report=-"}},
		{[]string{"prep", "--report", "--out", "x"}, []string{"prep", "--report=-", "--out", "x"}},
		{[]string{"prep", "--report", "-"}, []string{"prep", "--report", "-"}},
		{[]string{"prep", "--", "--report"}, []string{"prep", "--", "--report"}},
		{[]string{"report", "--html", "x"}, []string{"report", "--html", "x"}}, // not an optional-value flag
		{[]string{"verify", "--report"}, []string{"verify", "--report"}},       // no such flag there: left to fail
	} {
		if got := expandOptionalValues(newRootCmd(), c.in); !slices.Equal(got, c.want) {
			t.Errorf("%q: got %q, want %q", c.in, got, c.want)
		}
	}
}

// TestPrepReportForms runs prep with each spelling of --report and looks for the report
// where it should be.
func TestPrepReportForms(t *testing.T) {
	dir := t.TempDir()
	custom := filepath.Join(dir, "r.html")
	for i, c := range []struct {
		args []string
		want string // report file, relative to OUT when not absolute
	}{
		{[]string{"--report", custom}, custom},
		{[]string{"--report=" + custom + "2"}, custom + "2"},
		{[]string{"--report"}, "report.html"},
		{[]string{"--report", "--no-progress"}, "report.html"},
	} {
		out := filepath.Join(dir, "out", string(rune('a'+i)))
		args := append([]string{"prep", "--offline", "--out", out, "--no-progress"}, c.args...)
		if code, _ := runCLI(t, args...); code != 0 {
			t.Errorf("%q: exit %d", args, code)
			continue
		}
		want := c.want
		if !filepath.IsAbs(want) {
			want = filepath.Join(out, want)
		}
		if st, err := os.Stat(want); err != nil || st.Size() == 0 {
			t.Errorf("%q: no report at %s: %v", args, want, err)
		}
	}
	// The help shows a value name, not pflag's string[="-"].
	code, help := runCLI(t, "prep", "--help")
	if code != 0 || !strings.Contains(help, "--report PATH") || strings.Contains(help, "[=") {
		t.Errorf("prep --help (exit %d) should show --report PATH and no [=…]:\n%s", code, help)
	}
}
