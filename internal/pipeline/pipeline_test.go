package pipeline

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/internal/shared"
	"github.com/ktoloader/ktoloader/kto"
	"github.com/ktoloader/ktoloader/loader"
	"github.com/ktoloader/ktoloader/testdata"
	"github.com/ktoloader/ktoloader/tokenize"
)

func demoTok(t testing.TB) *tokenize.Tokenizer {
	t.Helper()
	tok, err := tokenize.LoadModelProto(bytes.NewReader(testdata.DemoTokenizerModel))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func sampleInputs() []Input {
	return []Input{
		{Name: testdata.SampleName, Open: func(c loader.Config) (*loader.Reader, error) {
			return loader.NewReader(bytes.NewReader(testdata.SampleJSONL), testdata.SampleName, c)
		}},
		{Name: "../../testdata/broken.jsonl", Open: func(c loader.Config) (*loader.Reader, error) {
			return loader.Open("../../testdata/broken.jsonl", c)
		}},
	}
}

func run(t testing.TB, cfg Config) *export.Manifest {
	t.Helper()
	m, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// readDir returns every file under dir with its bytes.
func readDir(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(dir, p)
		files[rel] = b
		return nil
	})
	return files
}

// TestWorkersByteIdentical: --workers 1 and --workers 2 (and 7) give byte-identical output
// directories, rejects and manifest included; and verify passes on them.
func TestWorkersByteIdentical(t *testing.T) {
	tok := demoTok(t)
	var first map[string][]byte
	for _, w := range []int{1, 2, 7} {
		out := filepath.Join(t.TempDir(), "out")
		run(t, Config{Inputs: sampleInputs(), Tokenizer: tok, TokKind: "demo", TokDemo: true, Out: out, Workers: w,
			KTO: kto.Config{TestFrac: 0.1, Seed: 3, MaxLen: 1024}, Writer: export.WriterOptions{Format: export.FormatBoth, ShardRows: 40}})
		got := readDir(t, out)
		if first == nil {
			first = got
			if len(got) < 8 {
				t.Fatalf("only %d files written", len(got))
			}
			rep, err := export.Verify(out)
			if err != nil || !rep.OK() {
				t.Fatalf("verify: %v %+v", err, rep)
			}
			continue
		}
		if len(got) != len(first) {
			t.Fatalf("workers=%d wrote %d files, workers=1 wrote %d", w, len(got), len(first))
		}
		for name, b := range first {
			if !bytes.Equal(got[name], b) {
				t.Errorf("workers=%d: %s differs", w, name)
			}
		}
	}
}

// TestAccounting checks that every row is written or rejected, that the rejects file holds
// the broken rows with their lines, that sft/ holds exactly the desirable written examples,
// and that every KTO batch holds both labels while both remain.
func TestAccounting(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	m := run(t, Config{Inputs: sampleInputs(), Tokenizer: demoTok(t), Out: out, Workers: 2,
		Loader: loader.Config{MaxLineBytes: 4096}, KTO: kto.Config{TestFrac: 0.1, Seed: 1}})
	c := m.Counts
	if c.Read != c.Written+c.Rejected {
		t.Errorf("read %d != written %d + rejected %d", c.Read, c.Written, c.Rejected)
	}
	var sum int64
	for _, n := range c.Reasons {
		sum += n
	}
	if sum != c.Rejected {
		t.Errorf("reasons sum %d, rejected %d", sum, c.Rejected)
	}
	sample := int64(bytes.Count(testdata.SampleJSONL, []byte("\n")))
	if c.Read != sample+29 {
		t.Errorf("read %d rows, inputs hold %d", c.Read, sample+29)
	}
	rej, err := os.ReadFile(filepath.Join(out, "rejects.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if n := int64(bytes.Count(rej, []byte("\n"))); n != c.Rejected {
		t.Errorf("rejects.jsonl has %d lines, manifest says %d", n, c.Rejected)
	}

	for _, split := range []string{"train", "test"} {
		var rows []kto.KTORow
		var sftTokens int64
		for _, f := range m.Files {
			if f.Split != split {
				continue
			}
			p := filepath.Join(out, f.Path)
			switch f.Kind {
			case export.KindKTO:
				rs, err := export.ReadAll[kto.KTORow](p)
				if err != nil {
					t.Fatal(err)
				}
				rows = append(rows, rs...)
			case export.KindSFT:
				rs, err := export.ReadAll[kto.SFTRow](p)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range rs {
					for _, l := range r.SeqLengths {
						sftTokens += int64(l)
					}
				}
			}
		}
		if len(rows) == 0 {
			t.Fatalf("%s: no kto rows", split)
		}
		var desTokens int64
		nD, nU := 0, 0
		for _, r := range rows {
			if r.Label {
				nD++
				desTokens += int64(len(r.PromptIDs) + len(r.CompletionIDs))
			} else {
				nU++
			}
		}
		if sftTokens != desTokens {
			t.Errorf("%s: sft holds %d tokens, the desirable kto rows %d", split, sftTokens, desTokens)
		}
		// Batches: consecutive batch_size rows; both labels in a batch while both remain.
		bs := m.KTO.BatchSize
		remD, remU := nD, nU
		for i := 0; i < len(rows); i += bs {
			b := rows[i:min(i+bs, len(rows))]
			d := 0
			for _, r := range b {
				if r.BatchIndex != b[0].BatchIndex {
					t.Fatalf("%s: batch at row %d mixes batch_index", split, i)
				}
				if r.Label {
					d++
				}
			}
			if remD > 0 && remU > 0 && len(b) > 1 && (d == 0 || d == len(b)) {
				t.Errorf("%s: batch %d holds one label while both remain", split, b[0].BatchIndex)
			}
			remD -= d
			remU -= len(b) - d
		}
	}
}

// TestRerun: the same run again replaces its own finished output without Force, with the
// same bytes; a run of other flags or other inputs needs Force.
func TestRerun(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	cfg := Config{Inputs: sampleInputs(), Tokenizer: demoTok(t), Out: out, ConfigEcho: export.RunConfig{Seed: 42, TestFrac: 0.1}}
	run(t, cfg)
	first := readDir(t, out)
	run(t, cfg)
	if second := readDir(t, out); !equalFiles(first, second) {
		t.Fatalf("an identical re-run changed the directory: %d files before, %d after", len(first), len(second))
	}
	other := cfg
	other.ConfigEcho = export.RunConfig{Seed: 43, TestFrac: 0.1}
	if _, err := Run(other); !errors.Is(err, export.ErrOutputExists) {
		t.Fatalf("a run of another seed into a finished directory: %v, want ErrOutputExists", err)
	}
	fewer := cfg
	fewer.Inputs = cfg.Inputs[:1]
	if _, err := Run(fewer); !errors.Is(err, export.ErrOutputExists) {
		t.Fatalf("a run of other inputs into a finished directory: %v, want ErrOutputExists", err)
	}
	if second := readDir(t, out); !equalFiles(first, second) {
		t.Fatal("a refused run changed the directory")
	}
	other.Force = true
	run(t, other)
}

func equalFiles(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !bytes.Equal(v, w) {
			return false
		}
	}
	return true
}

// TestNexusReal runs prep on the real Nexus KTO file with the real Mistral tokenizer: every
// row accounted for, lines 1511 and 2947 rejected, verify passes, sft = desirable rows.
func TestNexusReal(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	data := shared.Path(t, "data", "nexus", "behavior_merged_kto_v1.5_balanced.jsonl")
	tok, err := tokenize.Load(shared.Path(t, "tokenizers", "mistral-7b-v0.3"))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	m := run(t, Config{Inputs: []Input{{Name: "nexus.jsonl", Open: func(c loader.Config) (*loader.Reader, error) { return loader.Open(data, c) }}},
		Tokenizer: tok, Out: out, KTO: kto.Config{TestFrac: 0.05, Seed: 42}})
	c := m.Counts
	if c.Read != 4572 || c.Written != 4570 || c.Rejected != 2 || c.Reasons["no_final_assistant"] != 2 {
		t.Errorf("counts %+v", c)
	}
	var des int64
	for _, s := range c.Splits {
		des += s.Desirable
	}
	var sftSeqs int64
	for _, p := range m.Packing.SFT {
		sftSeqs += p.Sequences
	}
	if sftSeqs != des {
		t.Errorf("sft holds %d sequences, %d desirable rows were written", sftSeqs, des)
	}
	rep, err := export.Verify(out)
	if err != nil || !rep.OK() {
		t.Fatalf("verify: %v %+v", err, rep)
	}
	for s, p := range m.Packing.SFT {
		t.Logf("sft/%s fill %.4f; kto_packed/%s fill %.4f", s, p.Fill, s, m.Packing.KTOPacked[s].Fill)
	}

}

// TestDropLastAccounted: examples that --drop-last leaves out are rejected with reason
// drop_last, never lost.
func TestDropLastAccounted(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	m := run(t, Config{Inputs: sampleInputs()[:1], Tokenizer: demoTok(t), Out: out, KTO: kto.Config{BatchSize: 5, DropLast: true}})
	c := m.Counts
	if c.Read != c.Written+c.Rejected || c.Reasons["drop_last"] == 0 {
		t.Fatalf("counts %+v", c)
	}
	if c.Written%5 != 0 {
		t.Errorf("written %d is not whole batches of 5", c.Written)
	}
	rej, _ := os.ReadFile(filepath.Join(out, "rejects.jsonl"))
	if n := bytes.Count(rej, []byte(`"reason":"drop_last"`)); int64(n) != c.Reasons["drop_last"] {
		t.Errorf("rejects.jsonl names %d drop_last rows, manifest %d", n, c.Reasons["drop_last"])
	}
	if rep, err := export.Verify(out); err != nil || !rep.OK() {
		t.Fatalf("verify: %v %+v", err, rep)
	}
}
