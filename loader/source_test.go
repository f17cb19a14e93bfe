package loader

import "testing"

// ParseSource reads back what FormatSource writes, file names with colons included, and says
// when a string is not a source.
func TestSourceRoundTrip(t *testing.T) {
	for _, c := range []struct {
		file string
		line int64
	}{{"in.jsonl", 1}, {"C:/data/x.jsonl", 42}, {"a:b:c", 0}, {"", 7}, {"<embedded>/sample.jsonl", 196}} {
		s := FormatSource(c.file, c.line)
		if f, l, ok := ParseSource(s); !ok || f != c.file || l != c.line {
			t.Errorf("ParseSource(%q) = %q, %d, %v; want %q, %d", s, f, l, ok, c.file, c.line)
		}
	}
	if f, l, ok := ParseSource("noline"); ok || f != "noline" || l != 0 {
		t.Errorf(`ParseSource("noline") = %q, %d, %v`, f, l, ok)
	}
	if _, _, ok := ParseSource("f:x1"); ok {
		t.Error(`ParseSource("f:x1") ok`)
	}
	row := Row{File: "f:g", Line: 3}
	if row.Source() != "f:g:3" {
		t.Errorf("Row.Source() = %q", row.Source())
	}
}
