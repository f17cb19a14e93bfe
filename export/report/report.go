// Package report is ktoloader's data-quality report: what a user should know about a prep
// output directory before spending GPU hours on it, as a self-contained HTML page (inline
// SVG plots, no scripts, no network) and a terminal summary.
//
// It reads OUT/manifest.json, the kto/, kto_packed/ and sft/ shards, OUT/rejects.jsonl and,
// when they can be found, the raw inputs the manifest names (matched to kto/ rows by their
// "file:line" source), and reports:
//
//   - counts by split × behavior × label, and rejects by reason with example lines;
//   - token-length histograms per label with the --max-len line, and the rows that
//     rejection (too_long), truncation (keep-end) and --drop-last cost;
//   - packing fill per row (histograms) and the overall fill ratio of kto_packed/ and sft/;
//   - label shortcuts: features that predict the label by themselves (the answer calls a
//     tool, its length, the prompt's system message, specific tool names, schema mismatches),
//     each with the accuracy of its best single rule and its AUC. A KTO model learns such a
//     shortcut instead of the behavior when one is available, so strong ones lead the page;
//   - tool calls checked against a schema file (unknown tool, missing required parameter,
//     unknown parameter), per label;
//   - prompts that appear with both labels, exact duplicate rows, rows whose prompt and answer
//     appear with both labels, and near-duplicate prompts across train and test.
//
// Tool calls are read from the rendered completions in the shards, which is exactly what the
// model is trained on. Raw inputs add what rendering loses: whether the prompt had a system
// message (the template folds it into the first user turn) and the text of the turns alone,
// which near-duplicate detection compares, leaving out system messages, whose boilerplate
// would make unrelated prompts look alike. Without the inputs the report says so and
// compares the rendered prompts instead.
//
// Memory: shards and inputs are streamed; per example the report keeps about 40 bytes
// (hashes, lengths, label, behavior), plus a MinHash signature per test example.
//
// It may import export, kto, tokenize, loader, internal/pyjson (to read rendered tool calls),
// internal/stablehash and testdata; only cmd/ktoloader imports it.
package report

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ktoloader/ktoloader/export"
)

// Options configure a report. Zero values take the defaults.
type Options struct {
	// ToolSchemas is a tool schema file (see LoadSchemas); "" skips the schema checks.
	ToolSchemas string
	// Inputs, when set, are where to read the manifest's inputs from, in the manifest's order
	// (for a report made from another directory than prep ran in). Otherwise the names the
	// manifest records are used as paths, relative to the current directory.
	Inputs []string
	// Rejects is the rejects file; "" means OUT/rejects.jsonl.
	Rejects string
	// Examples is how many examples each finding shows; 0 means 3.
	Examples int
}

func (o Options) examples() int {
	if o.Examples <= 0 {
		return 3
	}
	return o.Examples
}

// Report is everything the page shows, also printable as JSON.
type Report struct {
	Dir       string               `json:"dir"`
	Tokenizer export.TokenizerInfo `json:"tokenizer"`
	MaxLen    int                  `json:"max_len"`
	Truncate  string               `json:"truncate"`
	TestFrac  float64              `json:"test_frac"`
	Inputs    []InputStatus        `json:"inputs"`
	// Warnings are the manifest's (export.ComputeWarnings for manifests written before
	// they existed): shown first.
	Warnings []export.Warning `json:"warnings"`
	// Findings are the report's conclusions, most serious first: what to look at.
	Findings []Finding       `json:"findings"`
	Counts   CountsReport    `json:"counts"`
	Rejects  RejectsReport   `json:"rejects"`
	Lengths  LengthsReport   `json:"lengths"`
	Packing  []PackKind      `json:"packing"`
	Answers  AnswersReport   `json:"answers"`
	Schema   *SchemaReport   `json:"schema,omitempty"`
	Dups     DuplicateReport `json:"duplicates"`
	// Shortcuts are sorted strongest first; ToolShortcuts are "the answer calls tool X" for
	// every tool name used.
	Shortcuts []Shortcut `json:"shortcuts"`
	// ShortcutsSkipped says why Shortcuts is empty when the data has a single label: a
	// feature cannot predict a label that never varies.
	ShortcutsSkipped string    `json:"shortcuts_skipped,omitempty"`
	Tools            []ToolUse `json:"tools"`
}

// Finding levels.
const (
	Alert   = "alert"   // likely to spoil training: look before training
	Warning = "warning" // worth a look
	Info    = "info"
)

// Finding is one conclusion of the report.
type Finding struct {
	Level   string `json:"level"`
	Title   string `json:"title"`
	Detail  string `json:"detail,omitempty"`
	Section string `json:"section"` // the HTML section that shows the evidence
}

// InputStatus says whether a raw input could be re-read and matched to the shards.
type InputStatus struct {
	Name    string `json:"name"` // as the manifest records it
	Path    string `json:"path,omitempty"`
	Found   bool   `json:"found"`
	Rows    int64  `json:"rows"`    // valid rows read
	Matched int64  `json:"matched"` // of which found in kto/
	// SHA256OK: the bytes read hash to the manifest's sha256 (false also when unread).
	SHA256OK bool   `json:"sha256_ok"`
	Note     string `json:"note,omitempty"`
}

// CountsReport is the manifest's accounting by split, behavior and label.
type CountsReport struct {
	Read     int64              `json:"read"`
	Written  int64              `json:"written"`
	Rejected int64              `json:"rejected"`
	Dropped  int64              `json:"dropped"` // written but left out of the last KTO batch (--drop-last)
	InKTO    int64              `json:"in_kto"`  // rows read back from kto/
	Rows     []CountRow         `json:"rows"`
	Notes    map[string]int64   `json:"notes,omitempty"`
	Splits   map[string]int64   `json:"splits"`
	Labels   export.LabelCounts `json:"labels"`
}

// CountRow is one split × behavior cell.
type CountRow struct {
	Split    string             `json:"split"`
	Behavior string             `json:"behavior"`
	Rows     export.LabelCounts `json:"rows"`
}

// RejectsReport is rejects.jsonl by reason.
type RejectsReport struct {
	File    string         `json:"file"`
	Found   bool           `json:"found"`
	Total   int64          `json:"total"` // lines in the file
	Reasons []RejectReason `json:"reasons"`
	Note    string         `json:"note,omitempty"`
}

// RejectReason counts one reason: Rows from the manifest, examples from the file.
type RejectReason struct {
	Reason   string          `json:"reason"`
	Rows     int64           `json:"rows"`
	Examples []RejectExample `json:"examples"`
}

// RejectExample is one line of rejects.jsonl, its raw text cut to a readable length.
type RejectExample struct {
	Source string `json:"source"`
	Field  string `json:"field,omitempty"`
	Detail string `json:"detail,omitempty"`
	Raw    string `json:"raw"`
}

// Histogram counts values in equal bins: bin i holds [Lo+i·Width, Lo+(i+1)·Width); when
// Open, the last bin also holds everything above.
type Histogram struct {
	Lo     float64  `json:"lo"`
	Width  float64  `json:"width"`
	Open   bool     `json:"last_bin_open,omitempty"`
	Series []Series `json:"series"`
}

// Series is one named line of a histogram.
type Series struct {
	Name   string  `json:"name"`
	Counts []int64 `json:"counts"`
}

// LengthsReport is token lengths per label and what --max-len cost.
type LengthsReport struct {
	MaxLen     int               `json:"max_len"`
	Prompt     Histogram         `json:"prompt"`
	Completion Histogram         `json:"completion"`
	Total      Histogram         `json:"total"`
	Stats      export.TokenStats `json:"stats"` // the manifest's, over written rows
	// TooLong rows were rejected for --max-len (--truncate reject); Truncated rows lost
	// prompt tokens (--truncate keep-end); Dropped rows fell out of the last batch
	// (--drop-last); KLTruncated KL completions were cut to fit beside their prompt.
	TooLong     int64 `json:"too_long"`
	Truncated   int64 `json:"truncated"`
	Dropped     int64 `json:"dropped"`
	KLTruncated int64 `json:"kl_truncated"`
	// NearLimit rows are within 10% of --max-len.
	NearLimit int64 `json:"near_limit"`
}

// PackKind is one packed directory (kto_packed, sft): per split, its rows' fill.
type PackKind struct {
	Kind   string      `json:"kind"`
	Fill   Histogram   `json:"fill"` // share of each row's --max-len that holds tokens, per split
	Splits []PackSplit `json:"splits"`
}

// PackSplit is one split of a packed directory.
type PackSplit struct {
	Split    string          `json:"split"`
	Manifest export.PackInfo `json:"manifest"`
	Rows     int64           `json:"rows"`     // read back
	Tokens   int64           `json:"tokens"`   // read back
	Fill     float64         `json:"fill"`     // read back: Tokens / (Rows × MaxLen)
	MinFill  float64         `json:"min_fill"` // the emptiest row
}

// AnswersReport says what the answers (completions) are, per label.
type AnswersReport struct {
	Rows        export.LabelCounts `json:"rows"`
	ToolCalls   export.LabelCounts `json:"tool_calls"`    // rows whose answer calls a tool
	TextOnly    export.LabelCounts `json:"text_only"`     // rows answering in text
	TextAndTool export.LabelCounts `json:"text_and_tool"` // rows with text before their tool calls
	Unparsed    int64              `json:"unparsed"`      // [TOOL_CALLS] in the ids but no call list in the text
	// SystemPrompt rows had a system message (raw inputs; Matched rows were looked at).
	SystemPrompt export.LabelCounts `json:"system_prompt"`
	Matched      export.LabelCounts `json:"matched"`
}

// DuplicateReport is about repeated prompts and rows.
type DuplicateReport struct {
	Prompts int64 `json:"prompts"` // distinct prompts
	// Prompts with both labels: the KTO pairing of a good and a bad answer; expected in paired
	// data, a contradiction only when the answers are equal too (Contradictions).
	BothLabels        int64           `json:"prompts_with_both_labels"`
	BothLabelRows     int64           `json:"rows_of_prompts_with_both_labels"`
	BothLabelExamples []PromptExample `json:"both_label_examples"`
	// ExactRows repeat an earlier row (same prompt, answer and label); ExactGroups counts
	// the rows repeated.
	ExactRows     int64           `json:"exact_duplicate_rows"`
	ExactGroups   int64           `json:"exact_duplicate_groups"`
	ExactExamples []PromptExample `json:"exact_duplicate_examples"`
	// Contradictions are (prompt, answer) pairs present with both labels.
	Contradictions        int64           `json:"contradictions"`
	ContradictionExamples []PromptExample `json:"contradiction_examples"`
	// CrossSplitPrompts are prompts with rows in both train and test: zero after prep's
	// group-aware split.
	CrossSplitPrompts int64         `json:"cross_split_prompts"`
	NearDup           NearDupReport `json:"near_duplicates"`
}

// PromptExample is a prompt with some of its rows.
type PromptExample struct {
	Rows []ExampleRow `json:"rows"`
}

// ExampleRow is one kto/ row, its text cut to a readable length.
type ExampleRow struct {
	Source     string `json:"source"`
	Split      string `json:"split"`
	Label      bool   `json:"label"`
	Behavior   string `json:"behavior"`
	Prompt     string `json:"prompt"` // the end of the prompt
	Completion string `json:"completion"`
}

// NearDupReport is test rows whose prompt is nearly a train row's prompt.
type NearDupReport struct {
	Compared  string  `json:"compared"` // what text was compared
	Threshold float64 `json:"threshold"`
	TestRows  int64   `json:"test_rows"`
	// WithNearDup test rows have a train row at or above the threshold; Identical of them
	// have one equal after normalization (lowercase, numbers and ids as 0, spaces collapsed).
	WithNearDup int64            `json:"test_rows_with_near_duplicate"`
	Identical   int64            `json:"identical_after_normalization"`
	Examples    []NearDupExample `json:"examples"`
	Note        string           `json:"note,omitempty"`
}

// NearDupExample is a test row and its most similar train row.
type NearDupExample struct {
	Test       ExampleRow `json:"test"`
	Train      ExampleRow `json:"train"`
	Similarity float64    `json:"similarity"`
	Identical  bool       `json:"identical"`
}

// Build computes the report of the prep output directory dir.
func Build(dir string, opt Options) (*Report, error) {
	m, err := export.ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	if len(opt.Inputs) > 0 && len(opt.Inputs) != len(m.Inputs) {
		return nil, fmt.Errorf("%w: %d given, the manifest names %d", ErrInputs, len(opt.Inputs), len(m.Inputs))
	}
	var schemas Schemas
	if opt.ToolSchemas != "" {
		if schemas, err = LoadSchemas(opt.ToolSchemas); err != nil {
			return nil, err
		}
	}
	s := newScanner(dir, m, opt, schemas)
	return s.run()
}

// Write builds the report of dir and writes its HTML page to htmlPath ("" means
// dir/report.html), atomically. The returned report prints the terminal summary
// (WriteSummary).
func Write(dir, htmlPath string, opt Options) (*Report, error) {
	r, err := Build(dir, opt)
	if err != nil {
		return nil, err
	}
	if htmlPath == "" {
		htmlPath = filepath.Join(dir, "report.html")
	}
	var buf bytes.Buffer
	if err := r.WriteHTML(&buf); err != nil {
		return nil, err
	}
	if d := filepath.Dir(htmlPath); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := export.WriteFileAtomic(htmlPath, buf.Bytes()); err != nil {
		return nil, err
	}
	return r, nil
}
