package main

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// untaggedInput writes the first n sample rows with the behavior tag removed from every
// other row (and the rest tagged through "pattern"), so that the summaries have to say
// where tags came from and show untagged rows.
func untaggedInput(t *testing.T, n int) string {
	t.Helper()
	f, err := os.Open("../../testdata/sample.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out strings.Builder
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<24)
	for i := 0; i < n && sc.Scan(); i++ {
		var row map[string]any
		if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
			t.Fatal(err)
		}
		var tag any = "tagged"
		for _, k := range []string{"behavior", "pattern", "category"} {
			if v, ok := row[k].(string); ok && v != "" {
				tag = v
				break
			}
		}
		delete(row, "behavior")
		delete(row, "pattern")
		delete(row, "category")
		if i%4 >= 2 { // keep KTO pairs (adjacent rows) together in one kind
			row["pattern"] = tag
		}
		b, _ := json.Marshal(row)
		out.Write(b)
		out.WriteByte('\n')
	}
	p := filepath.Join(t.TempDir(), "untagged.jsonl")
	if err := os.WriteFile(p, []byte(out.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// cell finds a table row whose first cells are the given words (tablewriter draws │ between).
func tableRow(out string, cells ...string) bool {
	pat := `(?m)^│\s*` + strings.Join(quoteAll(cells), `\s*│\s*`) + `\s*│`
	return regexp.MustCompile(pat).MatchString(out)
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = regexp.QuoteMeta(s)
	}
	return out
}

func TestValidateShowsBehaviorFields(t *testing.T) {
	in := untaggedInput(t, 40)
	code, out := runCLI(t, "validate", "--input", in)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	if !tableRow(out, "pattern", "20") || !tableRow(out, "(none)", "20") {
		t.Errorf("validate's summary should count 20 rows tagged by pattern and 20 untagged:\n%s", out)
	}
}

func TestInspectShowsUntaggedAsNone(t *testing.T) {
	in := untaggedInput(t, 40)
	dir := filepath.Join(t.TempDir(), "out")
	if code, _ := runCLI(t, "prep", "--input", in, "--offline", "--out", dir, "--no-progress"); code != 0 {
		t.Fatalf("prep exit %d", code)
	}
	code, out := runCLI(t, "inspect", dir, "--row", "0")
	if code != 0 {
		t.Fatalf("inspect exit %d", code)
	}
	if !tableRow(out, "train", "(none)") {
		t.Errorf("inspect should show untagged rows as (none):\n%s", out)
	}
	if regexp.MustCompile(`(?m)^│\s*train\s*│\s*│`).MatchString(out) {
		t.Errorf("inspect shows an empty behavior cell:\n%s", out)
	}
	if strings.Contains(out, `behavior ""`) {
		t.Errorf("inspect shows an untagged row as behavior \"\":\n%s", out)
	}
}
