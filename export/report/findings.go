package report

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/kto"
)

// Section anchors of the HTML page.
const (
	secInputs     = "inputs"
	secCounts     = "counts"
	secRejects    = "rejects"
	secLengths    = "lengths"
	secPacking    = "packing"
	secShortcuts  = "shortcuts"
	secSchema     = "schema"
	secDuplicates = "duplicates"
)

func pct(x float64) string { return fmt.Sprintf("%.1f%%", 100*x) }

func labelSplit(c export.LabelCounts) string {
	return fmt.Sprintf("%d desirable, %d undesirable", c.Desirable, c.Undesirable)
}

// minPerLabel is the fewest rows of each label for which a shortcut becomes a finding:
// with fewer, a perfect split happens by chance (the table still shows it).
const minPerLabel = 20

// skewed reports whether one label holds at least 90% of c (and c is not tiny).
func skewed(c export.LabelCounts) bool {
	n := total(c)
	return n >= 5 && float64(max(c.Desirable, c.Undesirable)) >= 0.9*float64(n)
}

func (s *scanner) findings() {
	r := s.rep
	add := func(level, section, title, detail string) {
		r.Findings = append(r.Findings, Finding{Level: level, Title: title, Detail: detail, Section: section})
	}
	rows := total(r.Answers.Rows)

	accuracy := map[string]float64{}
	for _, sc := range r.Shortcuts {
		accuracy[sc.Feature] = sc.Accuracy
	}
	for _, sc := range r.Shortcuts {
		if sc.Yes != nil && min(sc.Yes.Desirable+sc.No.Desirable, sc.Yes.Undesirable+sc.No.Undesirable) < minPerLabel {
			continue
		}
		if sc.Yes == nil && (r.Answers.Rows.Desirable < minPerLabel || r.Answers.Rows.Undesirable < minPerLabel) {
			continue
		}
		if a, ok := accuracy[sc.Refines]; ok && sc.Accuracy < a+0.01 {
			continue // says no more than the yes/no feature it refines
		}
		level := ""
		switch sc.Level {
		case LevelDecisive, LevelStrong:
			level = Alert
		case LevelModerate:
			level = Warning
		}
		withinStrong := sc.WithinBehavior != nil && *sc.WithinBehavior >= 0.85 && *sc.WithinBehavior >= sc.Accuracy+0.05
		if level == "" && !withinStrong {
			continue
		}
		if level == "" {
			level = Warning
		}
		title := fmt.Sprintf("Label shortcut (%s): %s, %s", sc.Level, sc.Feature, sc.Rule)
		detail := fmt.Sprintf("Alone it gets the label right for %s of %d rows (majority label: %s); AUC %.3f (strength max(AUC, 1−AUC) %.3f).",
			pct(sc.Accuracy), sc.Rows, pct(sc.Baseline), sc.AUC, sc.Strength)
		if sc.Yes != nil {
			detail += fmt.Sprintf(" Yes: %s; no: %s.", labelSplit(*sc.Yes), labelSplit(*sc.No))
		}
		if sc.WithinBehavior != nil && *sc.WithinBehavior >= sc.Accuracy+0.01 {
			detail += fmt.Sprintf(" With the rule chosen per behavior (which the prompt gives away): %s.", pct(*sc.WithinBehavior))
		}
		var decided []string
		for _, b := range sc.ByBehavior {
			if n := total(b.Yes) + total(b.No); n >= 10 && b.Accuracy >= 0.9 {
				decided = append(decided, fmt.Sprintf("%s %s", orNone(b.Behavior), pct(b.Accuracy)))
			}
		}
		if len(decided) > 0 {
			detail += " It decides the label (≥ 90%) within " + listSome(decided, 6) + "."
		}
		detail += " A KTO model can learn this instead of the behavior."
		add(level, secShortcuts, title, detail)
	}

	var onlyU, onlyD []string
	var usesU, usesD int64
	for _, t := range r.Tools {
		switch {
		case t.Rows.Desirable == 0 && t.Rows.Undesirable >= 2:
			onlyU = append(onlyU, t.Name)
			usesU += t.Rows.Undesirable
		case t.Rows.Undesirable == 0 && t.Rows.Desirable >= 2:
			onlyD = append(onlyD, t.Name)
			usesD += t.Rows.Desirable
		}
	}
	for _, o := range []struct {
		names []string
		uses  int64
		label string
	}{{onlyU, usesU, "undesirable"}, {onlyD, usesD, "desirable"}} {
		if len(o.names) == 0 || r.ShortcutsSkipped != "" { // with one label every tool is "only" in it
			continue
		}
		if len(o.names) == 0 {
			continue
		}
		level := Info
		if float64(o.uses) >= 0.01*float64(rows) {
			level = Warning
		}
		add(level, secShortcuts, fmt.Sprintf("%d tool names appear only in %s answers (%d answers, counted per tool)", len(o.names), o.label, o.uses),
			"The tool name alone gives the label away for these rows: "+listSome(o.names, 8)+".")
	}

	if sr := r.Schema; sr != nil {
		for _, c := range []struct {
			what   string
			counts export.LabelCounts
		}{
			{fmt.Sprintf("call tools not in the %d schemas", sr.Tools), sr.UnknownTool},
			{"miss a required parameter", sr.MissingRequired},
			{"pass a parameter the schema does not define", sr.UnknownParam},
			{"pass arguments that are not an object", sr.BadArguments},
		} {
			n := total(c.counts)
			if n == 0 {
				continue
			}
			level := Warning
			if skewed(c.counts) && float64(n) >= 0.01*float64(rows) {
				level = Alert
			}
			detail := "Checked against " + sr.File + "."
			if skewed(c.counts) {
				detail += " Nearly all of them carry one label, so the mismatch itself is a label shortcut."
			}
			if c.what == "pass a parameter the schema does not define" {
				if top := topParams(sr.Problems, ProblemUnknownParam, 3); top != "" {
					detail += " Most often: " + top + "."
				}
			}
			add(level, secSchema, fmt.Sprintf("%d rows %s: %s", n, c.what, labelSplit(c.counts)), detail)
		}
	}

	d := r.Dups
	if d.CrossSplitPrompts > 0 {
		add(Alert, secDuplicates, fmt.Sprintf("%d prompts have rows in both train and test", d.CrossSplitPrompts),
			"The group-aware split should keep each prompt on one side: the test score is inflated.")
	}
	if d.Contradictions > 0 {
		add(Alert, secDuplicates, fmt.Sprintf("%d prompt+answer pairs appear with both labels", d.Contradictions),
			"The same answer to the same prompt is called both desirable and undesirable.")
	}
	if d.NearDup.WithNearDup > 0 {
		add(Warning, secDuplicates, fmt.Sprintf("%d of %d test rows have a near-duplicate prompt in train (%d identical after normalization)",
			d.NearDup.WithNearDup, d.NearDup.TestRows, d.NearDup.Identical),
			fmt.Sprintf("Estimated Jaccard similarity ≥ %.2f of character 5-grams of %s. Such test rows measure memory more than generalization.", d.NearDup.Threshold, d.NearDup.Compared))
	}
	if d.ExactRows > 0 {
		add(Warning, secDuplicates, fmt.Sprintf("%d rows repeat an earlier row exactly (%d distinct rows repeated)", d.ExactRows, d.ExactGroups),
			"Same prompt, answer and label: they weigh those examples more.")
	}
	if d.BothLabels > 0 {
		add(Info, secDuplicates, fmt.Sprintf("%d of %d prompts appear with both labels (%d rows)", d.BothLabels, d.Prompts, d.BothLabelRows),
			"The usual KTO pairing of a good and a bad answer to one prompt; the split keeps each prompt on one side.")
	}

	if a := r.Answers; a.Unparsed > 0 {
		add(Warning, secSchema, fmt.Sprintf("%d answers hold [TOOL_CALLS] whose call list could not be read", a.Unparsed),
			"Their tool names and arguments are not counted.")
	}

	c := r.Counts
	if c.Rejected > 0 {
		level := Info
		if float64(c.Rejected) > 0.01*float64(c.Read) {
			level = Warning
		}
		var parts []string
		for _, rr := range r.Rejects.Reasons {
			parts = append(parts, fmt.Sprintf("%s %d", rr.Reason, rr.Rows))
		}
		add(level, secRejects, fmt.Sprintf("%d of %d rows rejected (%s)", c.Rejected, c.Read, pct(ratio(c.Rejected, c.Read))), strings.Join(parts, ", ")+".")
	}
	if l := r.Lengths; l.TooLong > 0 || l.Truncated > 0 {
		advice := "Raise --max-len, or use --truncate keep-end to keep the answers of long prompts."
		if r.Truncate == kto.TruncateKeepEnd {
			advice = "Raise --max-len to keep whole prompts; rows whose answer alone does not fit are rejected under any --truncate."
		}
		add(Info, secLengths, fmt.Sprintf("--max-len %d cost %d rows rejected as too long and %d truncated", l.MaxLen, l.TooLong, l.Truncated), advice)
	}
	if c.Dropped > 0 {
		add(Info, secCounts, fmt.Sprintf("%d rows left out of the last, partial KTO batch (--drop-last)", c.Dropped), "")
	}
	if tr, ok := s.m.Counts.Splits["train"]; ok && tr.Desirable > 0 && tr.Undesirable > 0 {
		ratio := float64(tr.Desirable) / float64(tr.Undesirable)
		if ratio > 4.0/3 || ratio < 0.75 {
			add(Info, secCounts, fmt.Sprintf("train labels are unbalanced: %d desirable, %d undesirable", tr.Desirable, tr.Undesirable),
				fmt.Sprintf("The manifest suggests KTO weights desirable %g, undesirable %g.", s.m.KTO.DesirableWeight, s.m.KTO.UndesirableWeight))
		}
	}
	for _, pk := range r.Packing {
		for _, ps := range pk.Splits {
			if ps.Rows > 0 && ps.Fill < 0.5 {
				add(Info, secPacking, fmt.Sprintf("%s/%s rows are only %s full", pk.Kind, ps.Split, pct(ps.Fill)),
					"Much of each packed row is padding: a smaller --max-len or a larger --kto-batch-size packs tighter.")
			}
		}
	}
	for _, in := range r.Inputs {
		switch {
		case !in.Found:
			add(Warning, secInputs, "input "+in.Name+" could not be re-read", in.Note+". Features from the raw rows (system prompt, turns) are missing, and near-duplicates were looked for in the rendered prompts.")
		case in.Note != "":
			add(Warning, secInputs, "input "+in.Name+": "+in.Note, "")
		}
	}
	if r.Tokenizer.Demo {
		add(Warning, secInputs, "the shards were made with the DEMO tokenizer", "Token counts and ids are not Mistral's.")
	}
	slices.SortStableFunc(r.Findings, func(a, b Finding) int { return cmp.Compare(levelRank(a.Level), levelRank(b.Level)) })
}

func orNone(behavior string) string {
	if behavior == "" {
		return "(none)"
	}
	return behavior
}

func levelRank(l string) int {
	switch l {
	case Alert:
		return 0
	case Warning:
		return 1
	}
	return 2
}

func listSome(xs []string, n int) string {
	if len(xs) <= n {
		return strings.Join(xs, ", ")
	}
	return strings.Join(xs[:n], ", ") + fmt.Sprintf(" and %d more", len(xs)-n)
}

// topParams names the parameters most often involved in problems of a kind.
func topParams(ps []Problem, kind string, n int) string {
	byParam := map[string]export.LabelCounts{}
	for _, p := range ps {
		if p.Kind == kind {
			c := byParam[p.Param]
			c.Desirable += p.Rows.Desirable
			c.Undesirable += p.Rows.Undesirable
			byParam[p.Param] = c
		}
	}
	keys := sortedKeys(byParam)
	slices.SortStableFunc(keys, func(a, b string) int { return cmp.Compare(total(byParam[b]), total(byParam[a])) })
	var parts []string
	for _, k := range keys[:min(n, len(keys))] {
		parts = append(parts, fmt.Sprintf("%q (%s)", k, labelSplit(byParam[k])))
	}
	return strings.Join(parts, ", ")
}
