package report

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/kto"
)

// Example text lengths, in runes: the end of a prompt (its last turn), the start of an answer.
const (
	promptTail     = 360
	completionHead = 360
)

// finish turns the passes' counts into the report and fetches the examples it shows.
func (s *scanner) finish() error {
	s.rep.Warnings = s.m.Warnings
	if s.rep.Warnings == nil {
		s.rep.Warnings = export.ComputeWarnings(s.m)
	}
	if s.rep.Warnings == nil {
		s.rep.Warnings = []export.Warning{}
	}
	s.counts()
	s.lengths()
	s.shortcuts()
	s.tooling()
	fetch := s.duplicates()
	rows := map[int32]*ExampleRow{}
	for _, ord := range fetch.ords {
		rows[ord] = nil
	}
	err := s.eachKTO(nil, func(ord int32, row *kto.KTORow) {
		if _, ok := rows[ord]; ok {
			rows[ord] = &ExampleRow{Source: row.Source, Split: splitName(s.ex[ord].test), Label: row.Label,
				Behavior: row.Behavior, Prompt: cutTail(row.Prompt, promptTail), Completion: cutHead(row.Completion, completionHead)}
		}
	})
	if err != nil {
		return err
	}
	fetch.fill(rows)
	s.findings()
	return nil
}

func splitName(test bool) string {
	if test {
		return "test"
	}
	return "train"
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func splitOrder(m map[string]export.SplitCounts) []string {
	keys := sortedKeys(m)
	slices.SortStableFunc(keys, func(a, b string) int {
		rank := func(s string) int {
			switch s {
			case "train":
				return 0
			case "test":
				return 1
			}
			return 2
		}
		return cmp.Compare(rank(a), rank(b))
	})
	return keys
}

func (s *scanner) counts() {
	c := &s.rep.Counts
	mc := s.m.Counts
	c.Read, c.Written, c.Rejected, c.Notes = mc.Read, mc.Written, mc.Rejected, mc.Notes
	c.Splits = map[string]int64{}
	c.Rows = []CountRow{}
	for _, split := range splitOrder(mc.Splits) {
		sc := mc.Splits[split]
		c.Splits[split] = sc.Examples
		c.Labels.Desirable += sc.Desirable
		c.Labels.Undesirable += sc.Undesirable
		for _, b := range sortedKeys(sc.Behaviors) {
			c.Rows = append(c.Rows, CountRow{Split: split, Behavior: b, Rows: sc.Behaviors[b]})
		}
	}
	for _, k := range sortedKeys(s.m.KTO.Splits) {
		c.Dropped += s.m.KTO.Splits[k].Dropped
		s.rep.Lengths.KLTruncated += s.m.KTO.Splits[k].KLTruncated
	}
}

func (s *scanner) lengths() {
	l := &s.rep.Lengths
	l.MaxLen = s.maxLen
	l.Prompt, l.Completion, l.Total = s.lens[0].histogram(), s.lens[1].histogram(), s.lens[2].histogram()
	l.Stats = s.m.Tokens
	l.TooLong = s.m.Counts.Reasons["too_long"]
	l.Truncated = s.m.Counts.Notes["truncated"]
	l.Dropped = s.rep.Counts.Dropped
}

func (s *scanner) shortcuts() {
	if l := s.rep.Counts.Labels; l.Desirable == 0 || l.Undesirable == 0 {
		which := "desirable"
		if l.Desirable == 0 {
			which = "undesirable"
		}
		if l.Desirable+l.Undesirable == 0 {
			s.rep.ShortcutsSkipped = "skipped: no examples"
		} else {
			s.rep.ShortcutsSkipped = fmt.Sprintf("skipped: every example is %s, so no feature can predict the label (any rule is right for all rows)", which)
		}
		return
	}
	for _, f := range []*feature{s.fCalls, s.fText, s.fNCalls, s.fCLen, s.fPLen, s.fUnknownTool, s.fMissing, s.fUnknownParam, s.fSystem, s.fTurns} {
		if f == nil {
			continue
		}
		r := f.result(s.behaviors)
		if r.Rows == 0 {
			continue
		}
		s.rep.Shortcuts = append(s.rep.Shortcuts, r)
	}
	slices.SortStableFunc(s.rep.Shortcuts, func(a, b Shortcut) int {
		if a.Level == LevelNone || b.Level == LevelNone {
			return cmp.Compare(boolInt(a.Level == LevelNone), boolInt(b.Level == LevelNone))
		}
		return cmp.Compare(b.Strength, a.Strength)
	})
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func byTotal[T any](xs []T, rows func(T) export.LabelCounts, name func(T) string) {
	slices.SortFunc(xs, func(a, b T) int {
		if c := cmp.Compare(total(rows(b)), total(rows(a))); c != 0 {
			return c
		}
		return strings.Compare(name(a), name(b))
	})
}

// tooling fills the tool-name table and the schema report.
func (s *scanner) tooling() {
	all := s.rep.Answers.Rows
	for _, name := range sortedKeys(s.tools) {
		tu := ToolUse{Name: name, Rows: *s.tools[name]}
		tu.AUC = binaryAUC(tu.Rows, all)
		if s.schemas != nil {
			_, ok := s.schemas[name]
			tu.InSchema = &ok
		}
		s.rep.Tools = append(s.rep.Tools, tu)
	}
	byTotal(s.rep.Tools, func(t ToolUse) export.LabelCounts { return t.Rows }, func(t ToolUse) string { return t.Name })
	if s.schemas == nil {
		return
	}
	sr := s.schemaReport()
	for _, name := range sortedKeys(s.unknownTools) {
		no := false
		tu := ToolUse{Name: name, InSchema: &no, Rows: *s.unknownTools[name]}
		tu.AUC = binaryAUC(tu.Rows, all)
		sr.UnknownTools = append(sr.UnknownTools, tu)
	}
	byTotal(sr.UnknownTools, func(t ToolUse) export.LabelCounts { return t.Rows }, func(t ToolUse) string { return t.Name })
	for p, c := range s.problems {
		sr.Problems = append(sr.Problems, Problem{Tool: p.tool, Param: p.param, Kind: p.kind, Rows: *c})
	}
	byTotal(sr.Problems, func(p Problem) export.LabelCounts { return p.Rows }, func(p Problem) string {
		return p.Tool + "\x00" + p.Param + "\x00" + p.Kind
	})
	for name := range s.schemas {
		if _, used := s.tools[name]; !used {
			sr.Unused = append(sr.Unused, name)
		}
	}
	slices.Sort(sr.Unused)
}

// fetchList collects the ordinals whose rows the report shows, and where they go.
type fetchList struct {
	ords  []int32
	fills []func(map[int32]*ExampleRow)
}

func (f *fetchList) want(ords []int32, put func([]ExampleRow)) {
	f.ords = append(f.ords, ords...)
	f.fills = append(f.fills, func(rows map[int32]*ExampleRow) {
		out := make([]ExampleRow, 0, len(ords))
		for _, o := range ords {
			if r := rows[o]; r != nil {
				out = append(out, *r)
			}
		}
		put(out)
	})
}

func (f *fetchList) fill(rows map[int32]*ExampleRow) {
	for _, fn := range f.fills {
		fn(rows)
	}
}

type ordHash struct {
	h   uint64
	ord int32
}

// groups sorts (hash, ordinal) pairs and calls fn with each run of equal hashes, in order of
// ordinal within the run.
func groups(xs []ordHash, fn func(g []ordHash)) {
	slices.SortFunc(xs, func(a, b ordHash) int {
		if c := cmp.Compare(a.h, b.h); c != 0 {
			return c
		}
		return cmp.Compare(a.ord, b.ord)
	})
	for i := 0; i < len(xs); {
		j := i + 1
		for j < len(xs) && xs[j].h == xs[i].h {
			j++
		}
		fn(xs[i:j])
		i = j
	}
}

// candidate is an example group: its first ordinal orders the choice, ords are shown.
type candidate struct {
	first int32
	ords  []int32
}

// firstK keeps the k candidates that come first in the data.
func firstK(cs []candidate, k int) []candidate {
	slices.SortFunc(cs, func(a, b candidate) int { return cmp.Compare(a.first, b.first) })
	return cs[:min(k, len(cs))]
}

func (s *scanner) duplicates() *fetchList {
	d := &s.rep.Dups
	k := s.opt.examples()
	fetch := &fetchList{}
	d.BothLabelExamples, d.ExactExamples, d.ContradictionExamples = []PromptExample{}, []PromptExample{}, []PromptExample{}
	d.NearDup.Examples = []NearDupExample{}

	xs := make([]ordHash, len(s.ex))
	for i, e := range s.ex {
		xs[i] = ordHash{e.prompt, int32(i)}
	}
	var both []candidate
	groups(xs, func(g []ordHash) {
		d.Prompts++
		first := [2]int32{-1, -1}
		var test, train bool
		for _, x := range g {
			e := &s.ex[x.ord]
			if l := li(e.label); first[l] < 0 {
				first[l] = x.ord
			}
			test = test || e.test
			train = train || !e.test
		}
		if test && train {
			d.CrossSplitPrompts++
		}
		if first[0] >= 0 && first[1] >= 0 {
			d.BothLabels++
			d.BothLabelRows += int64(len(g))
			both = append(both, candidate{g[0].ord, []int32{first[1], first[0]}})
		}
	})
	for _, c := range firstK(both, k) {
		fetch.want(c.ords, func(rows []ExampleRow) { d.BothLabelExamples = append(d.BothLabelExamples, PromptExample{rows}) })
	}

	for i, e := range s.ex {
		xs[i] = ordHash{e.pair, int32(i)}
	}
	var exact, contra []candidate
	groups(xs, func(g []ordHash) {
		if len(g) < 2 {
			return
		}
		var byLabel [2][]int32
		for _, x := range g {
			l := li(s.ex[x.ord].label)
			byLabel[l] = append(byLabel[l], x.ord)
		}
		if len(byLabel[0]) > 0 && len(byLabel[1]) > 0 {
			d.Contradictions++
			contra = append(contra, candidate{g[0].ord, []int32{byLabel[1][0], byLabel[0][0]}})
		}
		for _, ords := range byLabel {
			if len(ords) > 1 {
				d.ExactGroups++
				d.ExactRows += int64(len(ords) - 1)
				exact = append(exact, candidate{ords[0], ords[:2]})
			}
		}
	})
	for _, c := range firstK(exact, k) {
		fetch.want(c.ords, func(rows []ExampleRow) { d.ExactExamples = append(d.ExactExamples, PromptExample{rows}) })
	}
	for _, c := range firstK(contra, k) {
		fetch.want(c.ords, func(rows []ExampleRow) {
			d.ContradictionExamples = append(d.ContradictionExamples, PromptExample{rows})
		})
	}

	nd := &d.NearDup
	for _, e := range s.ex {
		if e.test {
			nd.TestRows++
		}
	}
	type hit struct {
		test int32
		m    match
	}
	var hits []hit
	for i, m := range s.best {
		if m.ord < 0 {
			continue
		}
		nd.WithNearDup++
		if m.identical {
			nd.Identical++
		}
		hits = append(hits, hit{s.lsh.ords[i], m})
	}
	slices.SortFunc(hits, func(a, b hit) int {
		if c := cmp.Compare(b.m.sim, a.m.sim); c != 0 {
			return c
		}
		return cmp.Compare(a.test, b.test)
	})
	for _, h := range hits[:min(k, len(hits))] {
		fetch.want([]int32{h.test, h.m.ord}, func(rows []ExampleRow) {
			if len(rows) == 2 {
				nd.Examples = append(nd.Examples, NearDupExample{Test: rows[0], Train: rows[1], Similarity: h.m.sim, Identical: h.m.identical})
			}
		})
	}
	return fetch
}
