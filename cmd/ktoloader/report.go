package main

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/export/report"
	"github.com/ktoloader/ktoloader/internal/outdir"
)

type reportFlags struct {
	html    string
	schemas string
	inputs  []string
	rejects string
	asJSON  bool
}

func newReportCmd() *cobra.Command {
	var f reportFlags
	cmd := &cobra.Command{
		Use:   "report OUT [--html report.html] [--tool-schemas FILE] [--input FILE…]",
		Short: "Write a data-quality report of an output directory: an HTML page with plots and a summary",
		Long: `report reads a prep output directory and writes a self-contained HTML page (inline SVG
plots, no scripts, no network) and prints a summary with its findings:

  - counts by split, behavior and label; rejected rows by reason, with example lines;
  - token-length histograms per label with the --max-len line, and what truncation and
    rejection cost;
  - packing fill per row of kto_packed/ and sft/, and the overall fill ratio;
  - label shortcuts: features that predict the label alone (the answer calls a tool, its
    length, a system prompt, tool names, schema mismatches), each with the accuracy of its
    best rule and its AUC, the strong ones first;
  - with --tool-schemas, every answer's tool calls checked against the schemas (unknown tool,
    missing required parameter, unknown parameter), per label;
  - prompts with both labels, exact duplicates, and near-duplicate prompts across train and
    test.

The raw inputs named in the manifest are re-read (as named, relative to the current
directory, or from --input in the manifest's order) for what rendering loses: the system
message and the turns near-duplicates are looked for in. When they cannot be found the
report says so and uses the shards alone.

The schema file is the Nexus form (an object of tool name → {"parameters": [{"name"}],
"required_params"}) or an OpenAI tools list. Exit 0 on success, 1 when OUT cannot be read,
2 on a usage error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runReport(cmd.OutOrStdout(), args[0], &f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.html, "html", "", "where to write the HTML page (default OUT/report.html)")
	fl.StringVar(&f.schemas, "tool-schemas", "", "tool schema file to check the answers' tool calls against")
	fl.StringSliceVarP(&f.inputs, "input", "i", nil, "the raw inputs, in the manifest's order, when their recorded names do not resolve from here")
	fl.StringVar(&f.rejects, "rejects", "", "rejects file (default OUT/rejects.jsonl)")
	fl.BoolVar(&f.asJSON, "json", false, "print the whole report as JSON instead of the summary")
	return cmd
}

func runReport(w io.Writer, dir string, f *reportFlags) error {
	if f.schemas != "" {
		if _, err := os.Stat(f.schemas); err != nil {
			return usagef("--tool-schemas: %v", err)
		}
	}
	opt := report.Options{ToolSchemas: f.schemas, Inputs: f.inputs, Rejects: f.rejects}
	htmlPath := f.html
	if htmlPath == "" {
		htmlPath = filepath.Join(dir, "report.html")
	}
	inputs := append([]string{filepath.Join(dir, export.ManifestName)}, f.inputs...)
	if err := outdir.CheckFile("--html", htmlPath, inputs, outdir.IsReport); err != nil {
		return err
	}
	r, err := report.Write(dir, htmlPath, opt)
	if errors.Is(err, report.ErrInputs) || errors.Is(err, report.ErrSchemaFile) {
		return usageError{err}
	}
	if err != nil {
		return err
	}
	if f.asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(r)
	}
	if err := r.WriteSummary(w); err != nil {
		return err
	}
	_, err = io.WriteString(w, "\nreport: "+htmlPath+"\n")
	return err
}
