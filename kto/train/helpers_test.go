package train

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/kto"
)

// Synthetic data: a learnable KTO task. Prompts are BOS then random ids in [10, 32);
// desirable completions are ids 5–7 then EOS, undesirable ones ids 8–9 then EOS, so a
// model can raise one kind and lower the other. Batches interleave desirable and
// undesirable; each example's KL pair is the previous example's completion (the first
// takes the last), as TRL pairs them.
const (
	synVocab   = 32
	synBOS     = 1
	synEOS     = 2
	synMaxLen  = 32
	synBatch   = 4
	synPadding = 0
)

// synSpec sizes synthetic data; synDefault is what the tests use.
type synSpec struct {
	maxLen, batch, vocab  int
	promptMin, promptSpan int // prompt length in [promptMin, promptMin+promptSpan)
	complMin, complSpan   int
}

var synDefault = synSpec{maxLen: synMaxLen, batch: synBatch, vocab: synVocab,
	promptMin: 3, promptSpan: 4, complMin: 2, complSpan: 3}

type synExample struct {
	prompt, completion []int32
	desirable          bool
}

func synBatchExamples(rng *rand.Rand, spec synSpec) []synExample {
	out := make([]synExample, spec.batch)
	for e := range out {
		prompt := []int32{synBOS}
		for range spec.promptMin + rng.IntN(spec.promptSpan) {
			prompt = append(prompt, int32(10+rng.IntN(spec.vocab-10)))
		}
		desirable := e%2 == 0
		var comp []int32
		for range spec.complMin + rng.IntN(spec.complSpan) {
			if desirable {
				comp = append(comp, int32(5+rng.IntN(3)))
			} else {
				comp = append(comp, int32(8+rng.IntN(2)))
			}
		}
		out[e] = synExample{prompt: prompt, completion: append(comp, synEOS), desirable: desirable}
	}
	return out
}

// packSyn packs a batch's targets and KL pairs, in order, first-fit into rows of synMaxLen.
func packSyn(batch []synExample, batchIndex int64, maxLen int) []kto.PackedRow {
	type seq struct {
		ids, mask []int32
		label     int32
		kl        bool
		example   int32
	}
	var seqs []seq
	for e, ex := range batch {
		label := int32(0)
		if ex.desirable {
			label = 1
		}
		klComp := batch[(e+len(batch)-1)%len(batch)].completion
		for _, kl := range []bool{false, true} {
			comp := ex.completion
			if kl {
				comp = klComp
			}
			s := seq{label: label, kl: kl, example: int32(e)}
			s.ids = append(append(s.ids, ex.prompt...), comp...)
			s.mask = make([]int32, len(s.ids))
			for i := len(ex.prompt); i < len(s.ids); i++ {
				s.mask[i] = 1
			}
			seqs = append(seqs, s)
		}
	}
	var rows []kto.PackedRow
	var fill []int
	for _, s := range seqs {
		r := -1
		for i := range rows {
			if fill[i]+len(s.ids) <= maxLen {
				r = i
				break
			}
		}
		if r < 0 {
			rows = append(rows, kto.PackedRow{
				InputIDs: make([]int32, maxLen), SegmentIDs: make([]int32, maxLen),
				PositionIDs: make([]int32, maxLen), LossMask: make([]int32, maxLen),
				BatchIndex: batchIndex,
			})
			fill = append(fill, 0)
			r = len(rows) - 1
		}
		row := &rows[r]
		row.SegmentLabel = append(row.SegmentLabel, s.label)
		row.SegmentKL = append(row.SegmentKL, s.kl)
		row.SegmentExample = append(row.SegmentExample, s.example)
		row.SegmentSource = append(row.SegmentSource, fmt.Sprintf("syn:%d", s.example))
		segID := int32(len(row.SegmentLabel))
		for i, id := range s.ids {
			row.InputIDs[fill[r]+i] = id
			row.SegmentIDs[fill[r]+i] = segID
			row.PositionIDs[fill[r]+i] = int32(i)
			row.LossMask[fill[r]+i] = s.mask[i]
		}
		fill[r] += len(s.ids)
	}
	return rows
}

func writeShard(t testing.TB, path string, rows []kto.PackedRow) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := parquet.NewGenericWriter[kto.PackedRow](f)
	if _, err := w.Write(rows); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// writeSynData writes a prep-like output directory: manifest.json and train/test shards
// (train split over two shard files).
func writeSynData(t testing.TB, trainBatches, testBatches int) string {
	t.Helper()
	return writeSynDataSpec(t, trainBatches, testBatches, synDefault)
}

func writeSynDataSpec(t testing.TB, trainBatches, testBatches int, spec synSpec) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, PackedDir), 0o755); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(11, 12))
	var train, test []kto.PackedRow
	for b := range trainBatches + testBatches {
		rows := packSyn(synBatchExamples(rng, spec), int64(b), spec.maxLen)
		if b < trainBatches {
			train = append(train, rows...)
		} else {
			test = append(test, rows...)
		}
	}
	half := len(train) / 2
	for half < len(train) && train[half].BatchIndex == train[half-1].BatchIndex {
		half++ // shards split between batches
	}
	writeShard(t, filepath.Join(dir, PackedDir, "train-00000-of-00002.parquet"), train[:half])
	writeShard(t, filepath.Join(dir, PackedDir, "train-00001-of-00002.parquet"), train[half:])
	if testBatches > 0 {
		writeShard(t, filepath.Join(dir, PackedDir, "test-00000-of-00001.parquet"), test)
	}
	writeSynManifest(t, dir, spec)
	return dir
}

// writeSynManifest writes dir/manifest.json as prep would for the kto_packed shards in dir:
// export's manifest, each shard listed with its size and sha256.
func writeSynManifest(t testing.TB, dir string, spec synSpec) {
	t.Helper()
	m := export.NewManifest()
	m.Config.MaxLen, m.Config.KTOBatchSize = spec.maxLen, spec.batch
	m.Tokenizer.VocabSize = spec.vocab
	m.KTO.DesirableWeight, m.KTO.UndesirableWeight = 1, 1
	files, _ := filepath.Glob(filepath.Join(dir, PackedDir, "*.parquet"))
	for _, f := range files {
		size, sum, err := export.FileSHA256(f)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(f)
		m.Files = append(m.Files, export.FileInfo{Path: PackedDir + "/" + name, Format: export.FormatParquet,
			Kind: PackedDir, Split: name[:strings.IndexByte(name, '-')], Bytes: size, SHA256: sum})
	}
	if err := export.WriteManifest(dir, m); err != nil {
		t.Fatal(err)
	}
}

func readShard(t testing.TB, path string) []kto.PackedRow {
	t.Helper()
	rows, err := parquet.ReadFile[kto.PackedRow](path)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}
