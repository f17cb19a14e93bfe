package report

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/internal/pipeline"
	"github.com/ktoloader/ktoloader/kto"
	"github.com/ktoloader/ktoloader/loader"
	"github.com/ktoloader/ktoloader/testdata"
	"github.com/ktoloader/ktoloader/tokenize"
)

const (
	brokenPath  = "../../testdata/broken.jsonl" // the loader's bad rows: rejects with examples
	schemasPath = "testdata/tool_schemas.json"
	testMaxLen  = 512 // below the sample's p95: too_long rejects
)

// prepSample runs prep (the pipeline the CLI runs) on the embedded sample and the loader's
// broken rows with the demo tokenizer into a new directory.
func prepSample(t *testing.T, extra ...pipeline.Input) string {
	t.Helper()
	tok, err := tokenize.LoadModelProto(bytes.NewReader(testdata.DemoTokenizerModel))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "out")
	inputs := []pipeline.Input{
		{Name: testdata.SampleName, Open: func(c loader.Config) (*loader.Reader, error) {
			return loader.NewReader(bytes.NewReader(testdata.SampleJSONL), testdata.SampleName, c)
		}},
		{Name: brokenPath, Open: func(c loader.Config) (*loader.Reader, error) { return loader.Open(brokenPath, c) }},
	}
	inputs = append(inputs, extra...)
	kc := kto.Config{BatchSize: 8, MaxLen: testMaxLen, TestFrac: 0.2, Seed: 42, Truncate: kto.TruncateReject}
	_, err = pipeline.Run(pipeline.Config{
		Inputs: inputs, Loader: loader.Config{MaxLineBytes: 4096},
		Tokenizer: tok, TokKind: tokenize.KindDemo, TokSource: testdata.DemoTokenizerName, TokDemo: true,
		KTO: kc, Out: dir, Workers: 2,
		ConfigEcho: export.RunConfig{MaxLen: testMaxLen, KTOBatchSize: 8, TestFrac: 0.2, Seed: 42,
			Truncate: kto.TruncateReject, MaxLineBytes: 4096},
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// rawRow is the independent reference: an input row parsed with encoding/json alone, with
// what the report should find in it.
type rawRow struct {
	label      bool
	system     bool
	calls      []rawCall
	completion int // tokens, from the shards
}

type rawCall struct {
	name string
	args map[string]json.RawMessage
}

func parseRawRow(t *testing.T, source string, line []byte) *rawRow {
	t.Helper()
	var r struct {
		Conversations []struct {
			Role      string `json:"role"`
			ToolCalls []struct {
				Function struct {
					Name      string          `json:"name"`
					Arguments json.RawMessage `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"conversations"`
		Messages json.RawMessage `json:"messages"`
		Label    bool            `json:"label"`
	}
	if err := json.Unmarshal(line, &r); err != nil {
		t.Fatalf("%s: %v", source, err)
	}
	if r.Conversations == nil && r.Messages != nil {
		if err := json.Unmarshal(r.Messages, &r.Conversations); err != nil {
			t.Fatal(err)
		}
	}
	row := &rawRow{label: r.Label}
	msgs := r.Conversations
	row.system = len(msgs) > 0 && msgs[0].Role == "system"
	for _, tc := range msgs[len(msgs)-1].ToolCalls {
		args := tc.Function.Arguments
		var s string
		if json.Unmarshal(args, &s) == nil {
			args = json.RawMessage(s)
		}
		c := rawCall{name: tc.Function.Name}
		if err := json.Unmarshal(args, &c.args); err != nil {
			t.Fatalf("%s: arguments: %v", source, err)
		}
		row.calls = append(row.calls, c)
	}
	return row
}

// ktoRows returns, by source, the raw rows that reached kto/ in dir, parsed independently,
// with their answer lengths from the shards.
func ktoRows(t *testing.T, dir string) map[string]*rawRow {
	t.Helper()
	m, err := export.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	lines := map[string][][]byte{}
	for _, in := range m.Inputs {
		data := testdata.SampleJSONL
		if in.Name != testdata.SampleName {
			if data, err = os.ReadFile(in.Name); err != nil {
				t.Fatal(err)
			}
		}
		lines[in.Name] = bytes.Split(data, []byte("\n"))
	}
	out := map[string]*rawRow{}
	for _, fi := range m.Files {
		if fi.Kind != export.KindKTO {
			continue
		}
		rows, err := export.ReadAll[kto.KTORow](filepath.Join(dir, fi.Path))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			i := strings.LastIndexByte(r.Source, ':')
			line, err := strconv.Atoi(r.Source[i+1:])
			file := lines[r.Source[:i]]
			if err != nil || line < 1 || line > len(file) {
				t.Fatalf("source %q names no input line", r.Source)
			}
			rr := parseRawRow(t, r.Source, file[line-1])
			if rr.label != r.Label {
				t.Fatalf("%s: label %v in kto/, %v in the input", r.Source, r.Label, rr.label)
			}
			rr.completion = len(r.CompletionIDs)
			out[r.Source] = rr
		}
	}
	return out
}

// bruteAUC compares every desirable score with every undesirable one.
func bruteAUC(scores []float64, labels []bool) float64 {
	var wins, pairs float64
	for i := range scores {
		for j := range scores {
			if labels[i] && !labels[j] {
				pairs++
				switch {
				case scores[i] > scores[j]:
					wins++
				case scores[i] == scores[j]:
					wins += 0.5
				}
			}
		}
	}
	return wins / pairs
}

// bruteAccuracy tries every threshold in both directions, and the constant rules.
func bruteAccuracy(scores []float64, labels []bool) float64 {
	best := 0
	cands := append(slices.Clone(scores), math.Inf(1))
	for _, t := range cands {
		for _, above := range []bool{true, false} {
			right := 0
			for i, s := range scores {
				if (s >= t) == above == labels[i] {
					right++
				}
			}
			best = max(best, right)
		}
	}
	return float64(best) / float64(len(scores))
}

func findShortcut(t *testing.T, r *Report, name string) Shortcut {
	t.Helper()
	for _, s := range r.Shortcuts {
		if s.Feature == name {
			return s
		}
	}
	t.Fatalf("no shortcut %q in %v", name, r.Shortcuts)
	return Shortcut{}
}

type schemaRef map[string]struct {
	Parameters []struct {
		Name string `json:"name"`
	} `json:"parameters"`
	Required []string `json:"required_params"`
}

func TestReportSample(t *testing.T) {
	dir := prepSample(t)
	r, err := Build(dir, Options{ToolSchemas: schemasPath})
	if err != nil {
		t.Fatal(err)
	}
	m, err := export.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	rows := ktoRows(t, dir)
	if len(rows) == 0 || int64(len(rows)) != r.Counts.InKTO {
		t.Fatalf("%d rows in kto/, the report read %d", len(rows), r.Counts.InKTO)
	}

	t.Run("counts", func(t *testing.T) {
		c := r.Counts
		if c.Read != m.Counts.Read || c.Written != m.Counts.Written || c.Rejected != m.Counts.Rejected || c.Rejected == 0 {
			t.Errorf("counts %+v, manifest %+v", c, m.Counts)
		}
		var sum export.LabelCounts
		for _, row := range c.Rows {
			sum.Desirable += row.Rows.Desirable
			sum.Undesirable += row.Rows.Undesirable
		}
		if sum != c.Labels || total(sum) != c.InKTO {
			t.Errorf("split×behavior cells sum to %+v, labels %+v, kto rows %d", sum, c.Labels, c.InKTO)
		}
	})

	t.Run("rejects", func(t *testing.T) {
		if !r.Rejects.Found || r.Rejects.Total != m.Counts.Rejected {
			t.Fatalf("rejects file: found %v, %d records; manifest %d", r.Rejects.Found, r.Rejects.Total, m.Counts.Rejected)
		}
		for _, rr := range r.Rejects.Reasons {
			if rr.Rows != m.Counts.Reasons[rr.Reason] {
				t.Errorf("%s: %d rows, manifest %d", rr.Reason, rr.Rows, m.Counts.Reasons[rr.Reason])
			}
			if len(rr.Examples) == 0 || len(rr.Examples) > min(3, int(rr.Rows)) {
				t.Errorf("%s: %d examples for %d rows", rr.Reason, len(rr.Examples), rr.Rows)
			}
			for _, ex := range rr.Examples {
				if !strings.Contains(ex.Source, ":") {
					t.Errorf("%s: example source %q", rr.Reason, ex.Source)
				}
			}
		}
		if r.Lengths.TooLong == 0 || r.Lengths.TooLong != m.Counts.Reasons["too_long"] {
			t.Errorf("too_long %d, manifest %d: --max-len %d should reject some sample rows", r.Lengths.TooLong, m.Counts.Reasons["too_long"], testMaxLen)
		}
	})

	// The features against the raw rows read with encoding/json, and AUC and accuracy
	// against brute force.
	var labels []bool
	var calls, clen, sys []float64
	for _, rr := range rows {
		labels = append(labels, rr.label)
		calls = append(calls, b2f(len(rr.calls) > 0))
		clen = append(clen, float64(rr.completion))
		sys = append(sys, b2f(rr.system))
	}
	for _, c := range []struct {
		feature string
		scores  []float64
	}{{"answer calls a tool", calls}, {"answer length (tokens)", clen}, {"prompt has a system message", sys}} {
		t.Run("shortcut "+c.feature, func(t *testing.T) {
			sc := findShortcut(t, r, c.feature)
			if sc.Rows != int64(len(c.scores)) {
				t.Fatalf("%d rows, want %d", sc.Rows, len(c.scores))
			}
			if want := bruteAUC(c.scores, labels); math.Abs(sc.AUC-want) > 1e-12 {
				t.Errorf("AUC %v, brute force %v", sc.AUC, want)
			}
			if want := bruteAccuracy(c.scores, labels); math.Abs(sc.Accuracy-want) > 1e-12 {
				t.Errorf("accuracy %v, brute force %v", sc.Accuracy, want)
			}
			if sc.Strength != math.Max(sc.AUC, 1-sc.AUC) || sc.Level == "" {
				t.Errorf("strength %v level %q", sc.Strength, sc.Level)
			}
		})
	}
	t.Run("answers", func(t *testing.T) {
		var want export.LabelCounts
		for _, rr := range rows {
			if len(rr.calls) > 0 {
				want.Add(rr.label)
			}
		}
		if r.Answers.ToolCalls != want {
			t.Errorf("answers calling a tool %+v, raw rows say %+v", r.Answers.ToolCalls, want)
		}
		if sc := findShortcut(t, r, "answer calls a tool"); *sc.Yes != want {
			t.Errorf("shortcut yes %+v, want %+v", *sc.Yes, want)
		}
	})

	t.Run("schema", func(t *testing.T) {
		data, err := os.ReadFile(schemasPath)
		if err != nil {
			t.Fatal(err)
		}
		var ref schemaRef
		if err := json.Unmarshal(data, &ref); err != nil {
			t.Fatal(err)
		}
		var unknown, missing, unknownParam export.LabelCounts
		unknownTools := map[string]bool{}
		for _, rr := range rows {
			var u, mi, up bool
			for _, c := range rr.calls {
				s, ok := ref[c.name]
				if !ok {
					u = true
					unknownTools[c.name] = true
					continue
				}
				for _, req := range s.Required {
					if _, ok := c.args[req]; !ok {
						mi = true
					}
				}
				for k := range c.args {
					if !slices.ContainsFunc(s.Parameters, func(p struct {
						Name string `json:"name"`
					}) bool {
						return p.Name == k
					}) {
						up = true
					}
				}
			}
			for _, x := range []struct {
				hit bool
				c   *export.LabelCounts
			}{{u, &unknown}, {mi, &missing}, {up, &unknownParam}} {
				if x.hit {
					x.c.Add(rr.label)
				}
			}
		}
		sr := r.Schema
		if sr == nil {
			t.Fatal("no schema report")
		}
		if total(unknown) == 0 || total(missing) == 0 || total(unknownParam) == 0 {
			t.Fatalf("the test schema should produce every kind of mismatch: %v %v %v", unknown, missing, unknownParam)
		}
		if sr.UnknownTool != unknown || sr.MissingRequired != missing || sr.UnknownParam != unknownParam {
			t.Errorf("unknown tool %+v missing %+v unknown param %+v; raw rows say %+v %+v %+v",
				sr.UnknownTool, sr.MissingRequired, sr.UnknownParam, unknown, missing, unknownParam)
		}
		if len(sr.UnknownTools) != len(unknownTools) || sr.Tools != len(ref) {
			t.Errorf("unknown tools %v (want %v), %d schemas (want %d)", sr.UnknownTools, unknownTools, sr.Tools, len(ref))
		}
		if !slices.Contains(sr.Unused, "vaultManager_openNote") {
			t.Errorf("unused %v lacks vaultManager_openNote", sr.Unused)
		}
	})

	t.Run("duplicates", func(t *testing.T) {
		d := r.Dups
		if d.CrossSplitPrompts != 0 {
			t.Errorf("%d prompts in both splits after the group-aware split", d.CrossSplitPrompts)
		}
		if d.BothLabels == 0 || len(d.BothLabelExamples) == 0 {
			t.Errorf("the sample pairs answers to one prompt: %d prompts with both labels, %d examples", d.BothLabels, len(d.BothLabelExamples))
		}
		for _, ex := range d.BothLabelExamples {
			if len(ex.Rows) != 2 || ex.Rows[0].Label == ex.Rows[1].Label || ex.Rows[0].Prompt != ex.Rows[1].Prompt {
				t.Errorf("both-label example %+v", ex)
			}
		}
		if d.NearDup.TestRows == 0 || !strings.Contains(d.NearDup.Compared, "raw inputs") {
			t.Errorf("near-duplicates: %d test rows compared on %q", d.NearDup.TestRows, d.NearDup.Compared)
		}
	})

	t.Run("html", func(t *testing.T) {
		var buf bytes.Buffer
		if err := r.WriteHTML(&buf); err != nil {
			t.Fatal(err)
		}
		page := buf.String()
		sc := findShortcut(t, r, "answer calls a tool")
		for _, want := range []string{
			`id="findings"`, `id="shortcuts"`, `id="schema"`, `id="duplicates"`,
			fmt.Sprintf("--max-len %d", testMaxLen),
			"answer calls a tool", fmt.Sprintf("%.3f", sc.AUC), pct(sc.Accuracy),
			fmt.Sprintf(`<td>calls a tool not in the schemas</td><td class="n">%d</td><td class="n">%d</td>`, r.Schema.UnknownTool.Desirable, r.Schema.UnknownTool.Undesirable),
			fmt.Sprintf(`<td>misses a required parameter</td><td class="n">%d</td><td class="n">%d</td>`, r.Schema.MissingRequired.Desirable, r.Schema.MissingRequired.Undesirable),
			"Prompt tokens per row", "Total tokens per row", "kto_packed/: fill of each packed row", "sft/: fill of each packed row",
		} {
			if !strings.Contains(page, want) {
				t.Errorf("page lacks %q", want)
			}
		}
		if n := strings.Count(page, "<svg "); n < 7 { // behaviors, strengths, 3 lengths, 2 packings
			t.Errorf("%d plots, want 7", n)
		}
		// Self-contained: no script, no stylesheet or image from elsewhere.
		for _, re := range []string{`<script`, `<link`, `<img`, `@import`, `url\(`, `(src|href)="https?:`} {
			if regexp.MustCompile(re).MatchString(page) {
				t.Errorf("page holds %s", re)
			}
		}
	})

	t.Run("deterministic", func(t *testing.T) {
		r2, err := Build(dir, Options{ToolSchemas: schemasPath})
		if err != nil {
			t.Fatal(err)
		}
		var a, b bytes.Buffer
		if err := r.WriteHTML(&a); err != nil {
			t.Fatal(err)
		}
		if err := r2.WriteHTML(&b); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a.Bytes(), b.Bytes()) {
			t.Error("two reports of one directory differ")
		}
	})

	t.Run("summary", func(t *testing.T) {
		var buf bytes.Buffer
		if err := r.WriteSummary(&buf); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"label shortcuts", "answer calls a tool", "tool not in the schemas",
			fmt.Sprintf("rejected %d", r.Counts.Rejected)} {
			if !strings.Contains(buf.String(), want) {
				t.Errorf("summary lacks %q:\n%s", want, buf.String())
			}
		}
	})
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// TestReportMissingInput moves an input away after prep: the report still builds from the
// shards, says the input is missing, and finds it again through Options.Inputs.
func TestReportMissingInput(t *testing.T) {
	src, err := os.ReadFile(brokenPath)
	if err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(t.TempDir(), "rows.jsonl")
	if err := os.WriteFile(in, src, 0o644); err != nil {
		t.Fatal(err)
	}
	dir := prepSample(t, pipeline.Input{Name: in, Open: func(c loader.Config) (*loader.Reader, error) { return loader.Open(in, c) }})
	moved := in + ".moved"
	if err := os.Rename(in, moved); err != nil {
		t.Fatal(err)
	}
	r, err := Build(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	last := r.Inputs[len(r.Inputs)-1]
	if last.Found || last.Name != in {
		t.Errorf("moved input: %+v", last)
	}
	if !slices.ContainsFunc(r.Findings, func(f Finding) bool { return strings.Contains(f.Title, in) }) {
		t.Errorf("no finding names the missing input: %+v", r.Findings)
	}
	if !strings.Contains(r.Dups.NearDup.Compared, "rendered prompts") {
		t.Errorf("near-duplicates compared %q without every input", r.Dups.NearDup.Compared)
	}

	paths := []string{testdata.SampleName, brokenPath, moved}
	r, err = Build(dir, Options{Inputs: paths})
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range r.Inputs {
		if !st.Found || !st.SHA256OK {
			t.Errorf("input given by Options.Inputs: %+v", st)
		}
	}
	if _, err := Build(dir, Options{Inputs: paths[:1]}); !errors.Is(err, ErrInputs) {
		t.Errorf("one path for three inputs: %v, want ErrInputs", err)
	}
}

func TestBuildErrors(t *testing.T) {
	if _, err := Build(t.TempDir(), Options{}); !errors.Is(err, export.ErrNoManifest) {
		t.Errorf("empty directory: %v, want ErrNoManifest", err)
	}
	bad := filepath.Join(t.TempDir(), "schemas.json")
	if err := os.WriteFile(bad, []byte(`{"x": 1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := prepSample(t)
	if _, err := Build(dir, Options{ToolSchemas: bad}); !errors.Is(err, ErrSchemaFile) {
		t.Errorf("bad schema file: %v, want ErrSchemaFile", err)
	}
	out := filepath.Join(t.TempDir(), "sub", "r.html")
	if _, err := Write(dir, out, Options{}); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(out); err != nil || st.Size() == 0 {
		t.Errorf("Write made no page: %v", err)
	}
}
