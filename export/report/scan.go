package report

import (
	"bufio"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/kto"
	"github.com/ktoloader/ktoloader/loader"
	"github.com/ktoloader/ktoloader/tokenize"
)

// example is what the report keeps of one kto/ row between passes.
type example struct {
	prompt   uint64 // hash of the rendered prompt: the split's group key
	pair     uint64 // hash of prompt and completion
	raw      uint64 // rawKey of its input row, or noRaw
	plen     int32
	clen     int32
	behavior int32
	label    bool
	test     bool
}

const noRaw = ^uint64(0)

// rawKey packs an input's index and a line number.
func rawKey(input int, line int64) uint64 { return uint64(input)<<40 | uint64(line)&(1<<40-1) }

// shardFile is one shard to read, with the ordinal of its first row (kto/ only).
type shardFile struct {
	path  string
	split string
	first int32
}

type scanner struct {
	dir     string
	m       *export.Manifest
	opt     Options
	schemas Schemas
	maxLen  int
	rep     *Report

	behaviors  []string
	behaviorID map[string]int32
	ex         []example
	ktoFiles   []shardFile
	byRaw      map[uint64]int32
	inputIdx   map[string]int

	lens [3]*histAcc // prompt, completion, total

	fCalls, fText, fNCalls, fCLen, fPLen  *feature
	fUnknownTool, fMissing, fUnknownParam *feature
	fSystem, fTurns                       *feature
	tools                                 map[string]*export.LabelCounts
	problems                              map[problemKey]*export.LabelCounts
	unknownTools                          map[string]*export.LabelCounts
	lsh                                   *lshIndex
	best                                  []match // per lsh entry
}

func newScanner(dir string, m *export.Manifest, opt Options, schemas Schemas) *scanner {
	maxLen := m.Packing.MaxLen
	if maxLen <= 0 {
		maxLen = m.Config.MaxLen
	}
	truncate, testFrac := m.Config.Truncate, m.Config.TestFrac
	s := &scanner{
		dir: dir, m: m, opt: opt, schemas: schemas, maxLen: maxLen,
		rep: &Report{Dir: dir, Tokenizer: m.Tokenizer, MaxLen: maxLen, Truncate: truncate, TestFrac: testFrac,
			Findings: []Finding{}, Shortcuts: []Shortcut{}, Tools: []ToolUse{}},
		behaviorID:   map[string]int32{},
		byRaw:        map[uint64]int32{},
		inputIdx:     map[string]int{},
		tools:        map[string]*export.LabelCounts{},
		problems:     map[problemKey]*export.LabelCounts{},
		unknownTools: map[string]*export.LabelCounts{},
		lsh:          newLSHIndex(),
	}
	for i, in := range m.Inputs {
		if _, dup := s.inputIdx[in.Name]; !dup {
			s.inputIdx[in.Name] = i
		}
	}
	// Bins are fixed before reading: the manifest knows the lengths' p95 and maximum. Prompt
	// and answer lengths are drawn up to twice their p95, which keeps the bulk readable when
	// a few rows are very long (the last bin holds the rest); the total always reaches
	// --max-len, which it is drawn against.
	upTo := func(d export.Dist) int64 {
		if d.P95 > 0 && 2*d.P95 < d.Max {
			return 2 * d.P95
		}
		return max(d.Max, 1)
	}
	s.lens[0] = newHistAcc(upTo(m.Tokens.Prompt), m.Tokens.Prompt.Max)
	s.lens[1] = newHistAcc(upTo(m.Tokens.Completion), m.Tokens.Completion.Max)
	s.lens[2] = newHistAcc(max(m.Tokens.Total.Max, int64(maxLen), 1), m.Tokens.Total.Max)

	s.fCalls = newFeature("answer calls a tool", "shards", true)
	s.fText = newFeature("answer has text beside its tool calls", "shards", true)
	s.fNCalls = newFeature("tool calls in the answer", "shards", false)
	s.fNCalls.refines = s.fCalls.name
	s.fCLen = newFeature("answer length (tokens)", "shards", false)
	s.fPLen = newFeature("prompt length (tokens)", "shards", false)
	if schemas != nil {
		s.fUnknownTool = newFeature("answer calls a tool not in the schemas", "tool schemas", true)
		s.fMissing = newFeature("answer misses a required parameter", "tool schemas", true)
		s.fUnknownParam = newFeature("answer passes a parameter not in the schema", "tool schemas", true)
	}
	s.fSystem = newFeature("prompt has a system message", "raw inputs", true)
	s.fTurns = newFeature("messages in the prompt", "raw inputs", false)
	s.fTurns.refines = s.fSystem.name // in chat data, mostly whether a system message leads
	return s
}

func (s *scanner) run() (*Report, error) {
	s.ktoFiles = s.shardFiles(export.KindKTO)
	if err := s.scanKTO(); err != nil {
		return nil, err
	}
	if err := s.scanRejects(); err != nil {
		return nil, err
	}
	if err := s.scanRaw(); err != nil {
		return nil, err
	}
	if err := s.scanPacking(); err != nil {
		return nil, err
	}
	if err := s.finish(); err != nil {
		return nil, err
	}
	return s.rep, nil
}

// shardFiles lists the shards of a kind: Parquet when there are any, else Arrow; train,
// then test, then other splits by name; each split's shards by path.
func (s *scanner) shardFiles(kind string) []shardFile {
	var files []export.FileInfo
	for _, format := range []export.Format{export.FormatParquet, export.FormatArrow} {
		for _, fi := range s.m.Files {
			if fi.Kind == kind && fi.Format == format {
				files = append(files, fi)
			}
		}
		if len(files) > 0 {
			break
		}
	}
	rank := func(split string) string {
		switch split {
		case "train":
			return "0"
		case "test":
			return "1"
		}
		return "2" + split
	}
	slices.SortFunc(files, func(a, b export.FileInfo) int {
		if c := strings.Compare(rank(a.Split), rank(b.Split)); c != 0 {
			return c
		}
		return strings.Compare(a.Path, b.Path)
	})
	out := make([]shardFile, len(files))
	for i, fi := range files {
		out[i] = shardFile{path: filepath.Join(s.dir, filepath.FromSlash(fi.Path)), split: fi.Split}
	}
	return out
}

func (s *scanner) behavior(name string) int32 {
	id, ok := s.behaviorID[name]
	if !ok {
		id = int32(len(s.behaviors))
		s.behaviors = append(s.behaviors, name)
		s.behaviorID[name] = id
	}
	return id
}

// rawKeyOf maps a shard's source column ("file:line", as prep wrote it) to its input row,
// when the file is a manifest input.
func (s *scanner) rawKeyOf(source string) uint64 {
	src, ok := loader.ParseSource(source)
	in, found := s.inputIdx[src.File]
	if !ok || !found || src.Line < 0 {
		return noRaw
	}
	return rawKey(in, src.Line)
}

// scanKTO is the first pass: one compact example per kto/ row, and every feature the
// shards give.
func (s *scanner) scanKTO() error {
	for k := range s.ktoFiles {
		f := &s.ktoFiles[k]
		f.first = int32(len(s.ex))
		test := f.split == "test"
		err := export.ReadBatches(f.path, 256, func(rows []kto.KTORow) error {
			for i := range rows {
				if len(s.ex) >= math.MaxInt32 {
					return fmt.Errorf("%s: more than %d rows", f.path, math.MaxInt32)
				}
				s.addRow(&rows[i], test)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	s.rep.Counts.InKTO = int64(len(s.ex))
	return nil
}

func (s *scanner) addRow(row *kto.KTORow, test bool) {
	ord := int32(len(s.ex))
	e := example{
		prompt: hashString(row.Prompt), pair: hashPair(row.Prompt, row.Completion), raw: s.rawKeyOf(row.Source),
		plen: int32(len(row.PromptIDs)), clen: int32(len(row.CompletionIDs)),
		behavior: s.behavior(row.Behavior), label: row.Label, test: test,
	}
	s.ex = append(s.ex, e)
	if e.raw != noRaw {
		s.byRaw[e.raw] = ord
	}
	label, b := row.Label, e.behavior
	s.lens[0].add(int64(e.plen), label)
	s.lens[1].add(int64(e.clen), label)
	s.lens[2].add(int64(e.plen+e.clen), label)
	if int(e.plen+e.clen) > s.maxLen*9/10 {
		s.rep.Lengths.NearLimit++
	}

	ans := &s.rep.Answers
	ans.Rows.Add(label)
	calls := slices.Contains(row.CompletionIDs, tokenize.ToolCallsID)
	var a answer
	if calls {
		if a = parseAnswer(row.Completion); !a.parsed {
			ans.Unparsed++
		}
		ans.ToolCalls.Add(label)
		if a.toolText {
			ans.TextAndTool.Add(label)
		}
	} else {
		ans.TextOnly.Add(label)
	}
	s.fCalls.addBool(calls, label, b)
	s.fText.addBool(a.toolText, label, b)
	s.fNCalls.add(int64(len(a.calls)), label, b)
	s.fCLen.add(int64(e.clen), label, b)
	s.fPLen.add(int64(e.plen), label, b)

	var names []string
	for _, c := range a.calls {
		if !slices.Contains(names, c.name) {
			names = append(names, c.name)
		}
	}
	for _, n := range names {
		c := s.tools[n]
		if c == nil {
			c = &export.LabelCounts{}
			s.tools[n] = c
		}
		c.Add(label)
	}
	if s.schemas == nil {
		return
	}
	sr := s.schemaReport()
	sr.Rows.Add(label)
	if len(a.calls) > 0 {
		sr.WithCalls.Add(label)
	}
	var probs []problemKey
	for _, c := range a.calls {
		sr.Calls.Add(label)
		for _, p := range s.schemas.check(c) {
			if p.kind == ProblemUnknownTool {
				sr.UnknownToolCalls.Add(label)
			}
			if !slices.Contains(probs, p) {
				probs = append(probs, p)
			}
		}
	}
	kinds := map[string]bool{}
	for _, p := range probs {
		kinds[p.kind] = true
		if p.kind == ProblemUnknownTool {
			c := s.unknownTools[p.tool]
			if c == nil {
				c = &export.LabelCounts{}
				s.unknownTools[p.tool] = c
			}
			c.Add(label)
			continue
		}
		c := s.problems[p]
		if c == nil {
			c = &export.LabelCounts{}
			s.problems[p] = c
		}
		c.Add(label)
	}
	for kind, c := range map[string]*export.LabelCounts{ProblemUnknownTool: &sr.UnknownTool,
		ProblemMissingParam: &sr.MissingRequired, ProblemUnknownParam: &sr.UnknownParam, ProblemBadArguments: &sr.BadArguments} {
		if kinds[kind] {
			c.Add(label)
		}
	}
	if len(probs) > 0 {
		sr.AnyProblem.Add(label)
	}
	s.fUnknownTool.addBool(kinds[ProblemUnknownTool], label, b)
	s.fMissing.addBool(kinds[ProblemMissingParam], label, b)
	s.fUnknownParam.addBool(kinds[ProblemUnknownParam], label, b)
}

func (s *scanner) schemaReport() *SchemaReport {
	if s.rep.Schema == nil {
		s.rep.Schema = &SchemaReport{File: s.opt.ToolSchemas, Tools: len(s.schemas),
			UnknownTools: []ToolUse{}, Problems: []Problem{}, Unused: []string{}}
	}
	return s.rep.Schema
}

// eachKTO re-reads the kto/ shards of the given splits (all when nil) with each row's ordinal.
func (s *scanner) eachKTO(splits []string, fn func(ord int32, row *kto.KTORow)) error {
	for _, f := range s.ktoFiles {
		if splits != nil && !slices.Contains(splits, f.split) {
			continue
		}
		ord := f.first
		err := export.ReadBatches(f.path, 256, func(rows []kto.KTORow) error {
			for i := range rows {
				if int(ord) < len(s.ex) {
					fn(ord, &rows[i])
				}
				ord++
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// scanRejects reads rejects.jsonl: its lines per reason and the first examples of each.
func (s *scanner) scanRejects() error {
	rr := &s.rep.Rejects
	rr.File = s.opt.Rejects
	if rr.File == "" {
		rr.File = filepath.Join(s.dir, "rejects.jsonl")
	}
	fromFile := map[string]*RejectReason{}
	f, err := os.Open(rr.File)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if s.m.Counts.Rejected > 0 {
			rr.Note = "the rejects file is missing: reasons are the manifest's, without examples"
		}
	case err != nil:
		return err
	default:
		rr.Found = true
		defer f.Close()
		dec := json.NewDecoder(bufio.NewReaderSize(f, 1<<20))
		for {
			var r loader.Reject
			err := dec.Decode(&r)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				rr.Note = fmt.Sprintf("record %d of the rejects file is not JSON (%v): the rest is not shown", rr.Total+1, err)
				break
			}
			rr.Total++
			rs := fromFile[r.Reason]
			if rs == nil {
				rs = &RejectReason{Reason: r.Reason, Examples: []RejectExample{}}
				fromFile[r.Reason] = rs
			}
			rs.Rows++
			if len(rs.Examples) < s.opt.examples() {
				rs.Examples = append(rs.Examples, RejectExample{Source: loader.Source{File: r.File, Line: r.Line}.String(),
					Field: r.Field, Detail: r.Detail, Raw: cutHead(r.Raw, 600)})
			}
		}
		if rr.Note == "" && rr.Total != s.m.Counts.Rejected {
			rr.Note = fmt.Sprintf("the rejects file holds %d records, the manifest counts %d rejected rows", rr.Total, s.m.Counts.Rejected)
		}
	}
	reasons := map[string]bool{}
	for k := range s.m.Counts.Reasons {
		reasons[k] = true
	}
	for k := range fromFile {
		reasons[k] = true
	}
	for k := range reasons {
		r := RejectReason{Reason: k, Examples: []RejectExample{}}
		if rs := fromFile[k]; rs != nil {
			r = *rs
		}
		if n, ok := s.m.Counts.Reasons[k]; ok {
			r.Rows = n
		}
		rr.Reasons = append(rr.Reasons, r)
	}
	slices.SortFunc(rr.Reasons, func(a, b RejectReason) int {
		if a.Rows != b.Rows {
			return cmp.Compare(b.Rows, a.Rows)
		}
		return strings.Compare(a.Reason, b.Reason)
	})
	return nil
}

// scanPacking reads kto_packed/ and sft/: each row's fill.
func (s *scanner) scanPacking() error {
	for _, kind := range []string{export.KindKTOPacked, export.KindSFT} {
		files := s.shardFiles(kind)
		if len(files) == 0 {
			continue
		}
		pk := PackKind{Kind: kind, Fill: Histogram{Lo: 0, Width: 0.05}}
		var splits []string
		for _, f := range files {
			if !slices.Contains(splits, f.split) {
				splits = append(splits, f.split)
			}
		}
		infos := s.m.Packing.KTOPacked
		if kind == export.KindSFT {
			infos = s.m.Packing.SFT
		}
		for _, split := range splits {
			ps := PackSplit{Split: split, Manifest: infos[split], MinFill: 1}
			counts := make([]int64, 20)
			add := func(tokens, length int) {
				if length == 0 {
					return
				}
				fill := float64(tokens) / float64(length)
				ps.Rows++
				ps.Tokens += int64(tokens)
				ps.MinFill = math.Min(ps.MinFill, fill)
				counts[min(int(fill*20), 19)]++
			}
			for _, f := range files {
				if f.split != split {
					continue
				}
				var err error
				if kind == export.KindKTOPacked {
					err = export.ReadBatches(f.path, 64, func(rows []kto.PackedRow) error {
						for _, r := range rows {
							n := 0
							for _, sid := range r.SegmentIDs {
								if sid != 0 {
									n++
								}
							}
							add(n, len(r.SegmentIDs))
						}
						return nil
					})
				} else {
					err = export.ReadBatches(f.path, 64, func(rows []kto.SFTRow) error {
						for _, r := range rows {
							n := 0
							for _, l := range r.SeqLengths {
								n += int(l)
							}
							add(n, len(r.InputIDs))
						}
						return nil
					})
				}
				if err != nil {
					return err
				}
			}
			if ps.Rows == 0 {
				ps.MinFill = 0
			} else if s.maxLen > 0 {
				ps.Fill = float64(ps.Tokens) / (float64(ps.Rows) * float64(s.maxLen))
			}
			pk.Splits = append(pk.Splits, ps)
			pk.Fill.Series = append(pk.Fill.Series, Series{Name: split, Counts: counts})
		}
		s.rep.Packing = append(s.rep.Packing, pk)
	}
	return nil
}

// histAcc counts lengths per label in bins fixed up front.
type histAcc struct {
	width  float64
	open   bool // the last bin also holds everything above it
	counts [2][]int64
}

// newHistAcc makes 24 to 60 bins of a round width (1, 2 or 5 × 10^k) covering 0..top;
// values up to most may lie beyond top.
func newHistAcc(top, most int64) *histAcc {
	w := niceWidth(float64(top)/60, 1)
	n := int(float64(top)/w) + 1
	return &histAcc{width: w, open: most >= int64(float64(n)*w), counts: [2][]int64{make([]int64, n), make([]int64, n)}}
}

func niceWidth(raw, least float64) float64 {
	if raw <= least {
		return least
	}
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*mag >= raw {
			return m * mag
		}
	}
	return 10 * mag
}

func (h *histAcc) add(v int64, label bool) {
	c := h.counts[li(label)]
	c[min(max(int(float64(v)/h.width), 0), len(c)-1)]++
}

func (h *histAcc) histogram() Histogram {
	return Histogram{Lo: 0, Width: h.width, Open: h.open, Series: []Series{
		{Name: "desirable", Counts: h.counts[1]}, {Name: "undesirable", Counts: h.counts[0]}}}
}

// cutHead keeps the first n runes of s, marking a cut with "…".
func cutHead(s string, n int) string {
	i := 0
	for k := range s {
		if i == n {
			return s[:k] + "…"
		}
		i++
	}
	return s
}

// cutTail keeps the last n runes of s, marking a cut with "…".
func cutTail(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return "…" + string(r[len(r)-n:])
}
