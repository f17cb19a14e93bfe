package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/internal/shared"
)

// rejectKey is what validate and prep must agree on for a refused row.
type rejectKey struct {
	Line          int64
	Field, Reason string
}

// readRejectKeys reads a rejects.jsonl (missing file: none), dropping too_long when asked.
func readRejectKeys(t *testing.T, path string, dropTooLong bool) []rejectKey {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []rejectKey
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 256<<20)
	for sc.Scan() {
		var r struct {
			Line          int64
			Field, Reason string
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if dropTooLong && r.Reason == "too_long" {
			continue
		}
		out = append(out, rejectKey{r.Line, r.Field, r.Reason})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Line < out[j].Line })
	return out
}

// prepAndValidate runs prep and validate on one input and returns their rejects (prep's
// without too_long, which validate cannot see) and prep's manifest.
func prepAndValidate(t *testing.T, input string, extra ...string) (prep, val []rejectKey, m *export.Manifest) {
	t.Helper()
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	args := append([]string{"prep", "--offline", "--no-progress", "--input", input, "--out", out}, extra...)
	if code, _, stderr := runCLIErr(t, args...); code != 0 {
		t.Fatalf("prep %s: exit %d: %s", input, code, stderr)
	}
	vrej := filepath.Join(dir, "validate.jsonl")
	if code, _, stderr := runCLIErr(t, "validate", "--input", input, "--rejects", vrej); code != 0 {
		t.Fatalf("validate %s: exit %d: %s", input, code, stderr)
	}
	data, err := os.ReadFile(filepath.Join(out, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	m = &export.Manifest{}
	if err := json.Unmarshal(data, m); err != nil {
		t.Fatal(err)
	}
	return readRejectKeys(t, filepath.Join(out, "rejects.jsonl"), true), readRejectKeys(t, vrej, false), m
}

func sameRejects(t *testing.T, name string, prep, val []rejectKey) {
	t.Helper()
	if fmt.Sprint(prep) == fmt.Sprint(val) {
		return
	}
	p, v := map[rejectKey]bool{}, map[rejectKey]bool{}
	for _, k := range prep {
		p[k] = true
	}
	for _, k := range val {
		v[k] = true
	}
	n := 0
	for _, k := range prep {
		if !v[k] && n < 10 {
			t.Errorf("%s: prep rejects %+v, validate does not", name, k)
			n++
		}
	}
	for _, k := range val {
		if !p[k] && n < 20 {
			t.Errorf("%s: validate rejects %+v, prep does not", name, k)
			n++
		}
	}
	if n == 0 {
		t.Errorf("%s: prep rejects %d rows, validate %d", name, len(prep), len(val))
	}
}

// TestValidateMatchesPrep: validate refuses exactly prep's rows (line, field, reason) apart
// from too_long, on the broken fixture and on every real data file in ../shared/data.
func TestValidateMatchesPrep(t *testing.T) {
	inputs := []string{"../../testdata/broken.jsonl"}
	if d := shared.Find(); d != "" {
		files, _ := filepath.Glob(filepath.Join(d, "data", "*", "*.json*"))
		inputs = append(inputs, files...)
	} else {
		t.Log("../shared not found: only testdata/broken.jsonl is compared (set KTOLOADER_SHARED for the real files)")
	}
	for _, in := range inputs {
		t.Run(filepath.Base(in), func(t *testing.T) {
			prep, val, _ := prepAndValidate(t, in)
			sameRejects(t, in, prep, val)
		})
	}
}

// TestRowPathCases: one row per case, refused (or noted) alike by prep and validate.
func TestRowPathCases(t *testing.T) {
	const call = `{"role":"assistant","content":null,"tool_calls":[{"id":"tmid00001","type":"function","function":{"name":"f","arguments":"{}"}}]}`
	row := func(msgs ...string) string {
		return `{"conversations":[{"role":"user","content":"q"},` + strings.Join(msgs, ",") + `],"label":true}`
	}
	cases := []struct {
		name, row     string
		field, reason string // "" "": the row is valid
		notes         map[string]int64
	}{
		{"user right after a tool result", row(call, `{"role":"tool","tool_call_id":"tmid00001","content":"r"}`, `{"role":"user","content":"again"}`, `{"role":"assistant","content":"a"}`),
			"conversations[3].role", "roles_not_alternating", nil},
		{"tool message without tool_call_id", row(call, `{"role":"tool","content":"r"}`, `{"role":"assistant","content":"a"}`),
			"conversations[2].tool_call_id", "bad_tool_call_id", nil},
		{"tool message with a null tool_call_id", row(call, `{"role":"tool","tool_call_id":null,"content":"r"}`, `{"role":"assistant","content":"a"}`),
			"conversations[2].tool_call_id", "bad_tool_call_id", nil},
		{"tool_call_id that no call has", row(call, `{"role":"tool","tool_call_id":"K89mmm74P","content":"r"}`, `{"role":"assistant","content":"a"}`),
			"", "", map[string]int64{"unpaired_tool_results": 1, "rows_with_unpaired_tool_results": 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := filepath.Join(t.TempDir(), "in.jsonl")
			// A good row beside it, so prep writes something whatever the case.
			good := row(`{"role":"assistant","content":"fine"}`)
			if err := os.WriteFile(in, []byte(tc.row+"\n"+good+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			prep, val, m := prepAndValidate(t, in)
			var want []rejectKey
			if tc.reason != "" {
				want = []rejectKey{{1, tc.field, tc.reason}}
			}
			if fmt.Sprint(prep) != fmt.Sprint(want) {
				t.Errorf("prep rejects %+v, want %+v", prep, want)
			}
			sameRejects(t, tc.name, prep, val)
			for k, v := range tc.notes {
				if m.Counts.Notes[k] != v {
					t.Errorf("manifest counts.notes[%s] = %d, want %d (notes %v)", k, m.Counts.Notes[k], v, m.Counts.Notes)
				}
			}
		})
	}
}
