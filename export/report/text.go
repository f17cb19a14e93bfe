package report

import (
	"fmt"
	"io"
	"strings"

	"github.com/olekukonko/tablewriter"
)

// WriteSummary writes the terminal summary: the counts in a few lines, every finding, and
// the shortcut and schema tables.
func (r *Report) WriteSummary(w io.Writer) error {
	ew := &errWriter{w: w}
	c := r.Counts
	fmt.Fprintf(ew, "data-quality report of %s\n", r.Dir)
	for _, w := range r.Warnings {
		fmt.Fprintf(ew, "WARNING [%s]: %s\n", w.Code, w.Message)
	}
	if r.Tokenizer.Demo {
		fmt.Fprintln(ew, "tokenizer: DEMO (not Mistral's ids)")
	}
	fmt.Fprintf(ew, "rows: read %d, written %d, rejected %d; in kto/: %d (%d desirable, %d undesirable)\n",
		c.Read, c.Written, c.Rejected, c.InKTO, c.Labels.Desirable, c.Labels.Undesirable)
	l := r.Lengths
	fmt.Fprintf(ew, "tokens per row: p50 %d, p95 %d, max %d; --max-len %d: %d rejected as too long, %d truncated\n",
		l.Stats.Total.P50, l.Stats.Total.P95, l.Stats.Total.Max, l.MaxLen, l.TooLong, l.Truncated)
	var fills []string
	for _, pk := range r.Packing {
		for _, ps := range pk.Splits {
			fills = append(fills, fmt.Sprintf("%s/%s %s", pk.Kind, ps.Split, pct(ps.Fill)))
		}
	}
	if len(fills) > 0 {
		fmt.Fprintf(ew, "packing fill: %s\n", strings.Join(fills, ", "))
	}
	a := r.Answers
	fmt.Fprintf(ew, "answers: %d call a tool (%d desirable, %d undesirable), %d text (%d desirable, %d undesirable)\n",
		total(a.ToolCalls), a.ToolCalls.Desirable, a.ToolCalls.Undesirable, total(a.TextOnly), a.TextOnly.Desirable, a.TextOnly.Undesirable)
	d := r.Dups
	fmt.Fprintf(ew, "duplicates: %d prompts (%d with both labels), %d exact duplicate rows, %d contradictions, %d prompts in both splits, %d of %d test rows with a near-duplicate in train\n",
		d.Prompts, d.BothLabels, d.ExactRows, d.Contradictions, d.CrossSplitPrompts, d.NearDup.WithNearDup, d.NearDup.TestRows)

	if len(r.Findings) > 0 {
		fmt.Fprintln(ew, "\nFINDINGS")
		for _, f := range r.Findings {
			fmt.Fprintf(ew, "  [%s] %s\n", strings.ToUpper(f.Level), f.Title)
			if f.Detail != "" {
				fmt.Fprintf(ew, "          %s\n", f.Detail)
			}
		}
	}

	if r.ShortcutsSkipped != "" {
		fmt.Fprintf(ew, "\nlabel shortcuts: %s\n", r.ShortcutsSkipped)
	}
	if len(r.Shortcuts) > 0 {
		fmt.Fprintln(ew, "\nlabel shortcuts (each feature alone):")
		t := tablewriter.NewWriter(ew)
		t.Header("feature", "rule", "accuracy", "majority", "AUC", "level", "per behavior")
		for _, s := range r.Shortcuts {
			t.Append(s.Feature, s.Rule, pct(s.Accuracy), pct(s.Baseline), fmt.Sprintf("%.3f", s.AUC), s.Level, derefPct(s.WithinBehavior))
		}
		t.Render()
	}
	if sr := r.Schema; sr != nil {
		fmt.Fprintf(ew, "\ntool calls against %s (%d tools), rows per label:\n", sr.File, sr.Tools)
		t := tablewriter.NewWriter(ew)
		t.Header("rows", "desirable", "undesirable")
		for _, row := range []struct {
			name string
			c    [2]int64
		}{
			{"answer calls a tool", [2]int64{sr.WithCalls.Desirable, sr.WithCalls.Undesirable}},
			{"tool not in the schemas", [2]int64{sr.UnknownTool.Desirable, sr.UnknownTool.Undesirable}},
			{"missing required parameter", [2]int64{sr.MissingRequired.Desirable, sr.MissingRequired.Undesirable}},
			{"unknown parameter", [2]int64{sr.UnknownParam.Desirable, sr.UnknownParam.Undesirable}},
			{"arguments not an object", [2]int64{sr.BadArguments.Desirable, sr.BadArguments.Undesirable}},
			{"any problem", [2]int64{sr.AnyProblem.Desirable, sr.AnyProblem.Undesirable}},
		} {
			t.Append(row.name, row.c[0], row.c[1])
		}
		t.Render()
		fmt.Fprintf(ew, "%d tool names used, %d of them not in the schemas; %d schema tools never called\n",
			len(r.Tools), len(sr.UnknownTools), len(sr.Unused))
	}
	return ew.err
}

func derefPct(p *float64) string {
	if p == nil {
		return "–"
	}
	return pct(*p)
}

// errWriter keeps the first write error, so the summary is written without checking each
// line and the error still reaches the caller.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}
