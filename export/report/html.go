package report

import (
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"strings"

	"github.com/ktoloader/ktoloader/export"
)

//go:embed report.html.tmpl
var pageTemplate string

var page = template.Must(template.New("report").Funcs(template.FuncMap{
	"pct":   pct,
	"auc":   func(x float64) string { return fmt.Sprintf("%.3f", x) },
	"total": total,
	"share": func(c export.LabelCounts) string {
		if total(c) == 0 {
			return "–"
		}
		return pct(ratio(c.Desirable, total(c)))
	},
	"label": labelWord,
	"deref": func(p *float64) string {
		if p == nil {
			return "–"
		}
		return pct(*p)
	},
	"inSchema": func(p *bool) string {
		switch {
		case p == nil:
			return "–"
		case *p:
			return "yes"
		}
		return "no"
	},
	"first": func(n int, xs any) any {
		switch v := xs.(type) {
		case []ToolUse:
			return v[:min(n, len(v))]
		case []Problem:
			return v[:min(n, len(v))]
		}
		return xs
	},
	"more":    func(n int, l int) int { return max(l-n, 0) },
	"join":    strings.Join,
	"rowPair": func(a, b ExampleRow) []ExampleRow { return []ExampleRow{a, b} },
	"kind": func(k string) string {
		switch k {
		case ProblemMissingParam:
			return "missing required parameter"
		case ProblemUnknownParam:
			return "unknown parameter"
		case ProblemBadArguments:
			return "arguments not an object"
		}
		return k
	},
}).Parse(pageTemplate))

// view is what the template renders: the report and its plots.
type view struct {
	*Report
	CountsPlot   template.HTML
	LengthPlots  []template.HTML
	PackPlots    []template.HTML
	StrengthPlot template.HTML
	CallsTool    *Shortcut // "answer calls a tool", shown per behavior
	Ranked       []Shortcut
}

// WriteHTML writes the report as one self-contained HTML page: inline CSS and SVG, no
// script, nothing fetched.
func (r *Report) WriteHTML(w io.Writer) error {
	v := view{Report: r}
	v.CountsPlot = template.HTML(r.countsPlot())
	l := r.Lengths
	maxMark := []mark{{float64(l.MaxLen), fmt.Sprintf("--max-len %d", l.MaxLen)}}
	for _, p := range []struct {
		title string
		h     Histogram
		marks []mark
	}{
		{"Prompt tokens per row", l.Prompt, nil},
		{"Answer (completion) tokens per row", l.Completion, nil},
		{"Total tokens per row (prompt + answer)", l.Total, maxMark},
	} {
		v.LengthPlots = append(v.LengthPlots, template.HTML(histPlot{title: p.title, xLabel: "tokens", h: p.h,
			colors: []string{colDesirable, colUndesirable}, marks: p.marks}.svg()))
	}
	for _, pk := range r.Packing {
		var marks []mark
		for _, ps := range pk.Splits {
			if ps.Rows > 0 {
				marks = append(marks, mark{ps.Fill, fmt.Sprintf("%s overall %s", ps.Split, pct(ps.Fill))})
			}
		}
		if len(marks) > 1 { // one label is readable; two overlap: name them in the table only
			marks = marks[:1]
		}
		v.PackPlots = append(v.PackPlots, template.HTML(histPlot{title: pk.Kind + "/: fill of each packed row", xLabel: "share of --max-len holding tokens",
			h: pk.Fill, colors: []string{colTrain, colTest}, marks: marks, xPct: true}.svg()))
	}
	for i := range r.Shortcuts {
		sc := &r.Shortcuts[i]
		if sc.Level != LevelNone {
			v.Ranked = append(v.Ranked, *sc)
		}
		if sc.Feature == "answer calls a tool" {
			v.CallsTool = sc
		}
	}
	if len(v.Ranked) > 0 {
		v.StrengthPlot = template.HTML(strengthChart(v.Ranked))
	}
	return page.Execute(w, v)
}

func (r *Report) countsPlot() string {
	type cell struct{ td, tu, sd, su int64 }
	cells := map[string]*cell{}
	var order []string
	for _, row := range r.Counts.Rows {
		c := cells[row.Behavior]
		if c == nil {
			c = &cell{}
			cells[row.Behavior] = c
			order = append(order, row.Behavior)
		}
		if row.Split == "test" {
			c.sd += row.Rows.Desirable
			c.su += row.Rows.Undesirable
		} else {
			c.td += row.Rows.Desirable
			c.tu += row.Rows.Undesirable
		}
	}
	order = sortedKeys(cells)
	var rows []barRow
	for _, b := range order {
		c := cells[b]
		name := b
		if name == "" {
			name = "(none)"
		}
		rows = append(rows, barRow{name, []int64{c.td, c.tu, c.sd, c.su}})
	}
	return stackedBars("Rows per behavior, by split and label",
		[]string{"train desirable", "train undesirable", "test desirable", "test undesirable"},
		[]string{colDesirable, colUndesirable, "#8fd3bf", "#f4b183"}, rows)
}
