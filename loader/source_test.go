package loader

import "testing"

// ParseSource reads back what Source.String writes, file names with colons included, and
// says when a string is not a source.
func TestSourceRoundTrip(t *testing.T) {
	for _, want := range []Source{{"in.jsonl", 1}, {"C:/data/x.jsonl", 42}, {"a:b:c", 0}, {"", 7}, {"<embedded>/sample.jsonl", 196}} {
		s := want.String()
		if got, ok := ParseSource(s); !ok || got != want {
			t.Errorf("ParseSource(%q) = %+v, %v; want %+v", s, got, ok, want)
		}
	}
	if got, ok := ParseSource("noline"); ok || got != (Source{File: "noline"}) {
		t.Errorf(`ParseSource("noline") = %+v, %v`, got, ok)
	}
	if _, ok := ParseSource("f:x1"); ok {
		t.Error(`ParseSource("f:x1") ok`)
	}
	row := Row{Source: Source{File: "f:g", Line: 3}}
	if got := row.Source.String(); got != "f:g:3" {
		t.Errorf("Row.Source.String() = %q", got)
	}
}
