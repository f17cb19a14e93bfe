package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const reportSchemas = "../../export/report/testdata/tool_schemas.json"

func TestReportCommand(t *testing.T) {
	dir := prepOutDir(t, "--test-frac", "0.2")
	out, code := runOutCmd(t, "report", dir, "--tool-schemas", reportSchemas)
	if code != 0 {
		t.Fatalf("report exit %d\n%s", code, out)
	}
	for _, want := range []string{"FINDINGS", "label shortcuts", "answer calls a tool", "tool not in the schemas", "report: " + filepath.Join(dir, "report.html")} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	page, err := os.ReadFile(filepath.Join(dir, "report.html"))
	if err != nil || !strings.Contains(string(page), "<svg") {
		t.Fatalf("no report page with plots: %v", err)
	}

	html := filepath.Join(t.TempDir(), "r.html")
	out, code = runOutCmd(t, "report", dir, "--html", html, "--json")
	if code != 0 {
		t.Fatalf("report --json exit %d\n%s", code, out)
	}
	var r struct {
		Counts struct {
			Read int64 `json:"read"`
		} `json:"counts"`
		Shortcuts []struct {
			Feature string  `json:"feature"`
			AUC     float64 `json:"auc"`
		} `json:"shortcuts"`
		Schema *struct{} `json:"schema"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("--json output: %v\n%s", err, out)
	}
	if r.Counts.Read == 0 || len(r.Shortcuts) == 0 || r.Schema != nil {
		t.Errorf("--json: %+v (no schema file was given)", r)
	}
	if _, err := os.Stat(html); err != nil {
		t.Errorf("--html: %v", err)
	}
}

func TestReportCommandErrors(t *testing.T) {
	dir := prepOutDir(t)
	bad := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(bad, []byte(`[1, 2]`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		args []string
		code int
	}{
		{"no directory", nil, 2},
		{"missing schema file", []string{dir, "--tool-schemas", filepath.Join(dir, "nope.json")}, 2},
		{"not a schema file", []string{dir, "--tool-schemas", bad}, 2},
		{"inputs do not match the manifest", []string{dir, "--input", "a.jsonl,b.jsonl"}, 2},
		{"not an output directory", []string{t.TempDir()}, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			if out, code := runOutCmd(t, "report", c.args...); code != c.code {
				t.Errorf("exit %d, want %d\n%s", code, c.code, out)
			}
		})
	}
}
