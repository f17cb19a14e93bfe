package train

import (
	stdcontext "context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/kto"
)

// handBatch is one batch of two examples in two rows of 8 (P prompt, C completion, K KL
// completion): row 0 holds example 0's target and example 1's KL pair, row 1 example 1's
// target (undesirable) and example 0's KL pair.
//
//	row 0  ids  1 11 12  5  6 | 1 13  8 | _     seg 1 1 1 1 1 2 2 2 0   mask 0 0 0 1 1 0 0 1 0
//	row 1  ids  1 13  8  9 | 1 11  5 | _         seg 1 1 1 1 2 2 2 0     mask 0 0 1 1 0 0 1 0
func handBatch() []kto.PackedRow {
	return []kto.PackedRow{
		{
			InputIDs:       []int32{1, 11, 12, 5, 6, 1, 13, 8},
			SegmentIDs:     []int32{1, 1, 1, 1, 1, 2, 2, 2},
			PositionIDs:    []int32{0, 1, 2, 3, 4, 0, 1, 2},
			LossMask:       []int32{0, 0, 0, 1, 1, 0, 0, 1},
			SegmentLabel:   []int32{1, 0},
			SegmentKL:      []bool{false, true},
			SegmentSource:  []string{"a:1", "b:1"},
			SegmentExample: []int32{0, 1},
			BatchIndex:     3,
		},
		{
			InputIDs:       []int32{1, 13, 8, 9, 1, 11, 5, 0},
			SegmentIDs:     []int32{1, 1, 1, 1, 2, 2, 2, 0},
			PositionIDs:    []int32{0, 1, 2, 3, 0, 1, 2, 0},
			LossMask:       []int32{0, 0, 1, 1, 0, 0, 1, 0},
			SegmentLabel:   []int32{0, 1},
			SegmentKL:      []bool{false, true},
			SegmentSource:  []string{"b:1", "a:1"},
			SegmentExample: []int32{1, 0},
			BatchIndex:     3,
		},
	}
}

// TestBatchShift checks the next-token labels and slots of handBatch, written out by hand
// from TRL's rule: position t scores token t+1 when t+1 is a completion token of t's sequence.
func TestBatchShift(t *testing.T) {
	shape := Shape{MaxLen: 8, BatchSize: 2, VocabSize: 32}
	b, err := shape.convert(&rawBatch{index: 3, rows: handBatch(), file: "hand"})
	if err != nil {
		t.Fatal(err)
	}
	// Scored positions r·8+t: row 0 t=2,3 (target 0: 5, 6) and t=6 (KL pair of example 1: 8);
	// row 1 t=1,2 (target 1: 8, 9) and t=5 (KL pair of example 0: 5). Padded to 6 entries.
	want := struct{ pos, labels, target, kl []int32 }{
		pos:    []int32{2, 3, 6, 9, 10, 13},
		labels: []int32{5, 6, 8, 8, 9, 5},
		target: []int32{0, 0, -1, 1, 1, -1},
		kl:     []int32{-1, -1, 1, -1, -1, 0},
	}
	if b.NumLabels != 6 || !slices.Equal(b.LabelPos, want.pos) {
		t.Errorf("%d scored positions %v, want 6: %v", b.NumLabels, b.LabelPos, want.pos)
	}
	if !slices.Equal(b.Labels, want.labels) {
		t.Errorf("labels\n got %v\nwant %v", b.Labels, want.labels)
	}
	if !slices.Equal(b.TargetSlot, want.target) {
		t.Errorf("target slots\n got %v\nwant %v", b.TargetSlot, want.target)
	}
	if !slices.Equal(b.KLSlot, want.kl) {
		t.Errorf("KL slots\n got %v\nwant %v", b.KLSlot, want.kl)
	}
	if !slices.Equal(b.Desirable, []float32{1, 0}) || !slices.Equal(b.Present, []float32{1, 1}) ||
		!slices.Equal(b.KLPresent, []float32{1, 1}) {
		t.Errorf("desirable %v present %v kl present %v", b.Desirable, b.Present, b.KLPresent)
	}
	if b.Tokens != 15 || b.Rows != 2 || b.NumRows != 2 {
		t.Errorf("tokens %d rows %d/%d, want 15 and 2/2", b.Tokens, b.NumRows, b.Rows)
	}
}

func TestBatchRowErrors(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(rows []kto.PackedRow)
		row    int64
	}{
		{"short_row", func(r []kto.PackedRow) { r[1].InputIDs = r[1].InputIDs[:7] }, 1},
		{"segment_lists", func(r []kto.PackedRow) { r[0].SegmentKL = r[0].SegmentKL[:1] }, 0},
		{"example_out_of_batch", func(r []kto.PackedRow) { r[1].SegmentExample[0] = 2 }, 1},
		{"duplicate_example", func(r []kto.PackedRow) { r[1].SegmentKL[1] = false; r[1].SegmentExample[1] = 0 }, 1},
		{"token_out_of_vocab", func(r []kto.PackedRow) { r[0].InputIDs[2] = 32 }, 0},
		{"undescribed_segment", func(r []kto.PackedRow) { r[0].SegmentIDs[7] = 3 }, 0},
		{"bad_label", func(r []kto.PackedRow) { r[0].SegmentLabel[0] = 2 }, 0},
	}
	shape := Shape{MaxLen: 8, BatchSize: 2, VocabSize: 32}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rows := handBatch()
			tc.mutate(rows)
			_, err := shape.convert(&rawBatch{index: 3, rows: rows, file: "hand", first: 10})
			var de *DataError
			if !errors.As(err, &de) || !errors.Is(err, ErrBadRow) {
				t.Fatalf("err = %v, want a DataError wrapping ErrBadRow", err)
			}
			if de.Row != 10+tc.row || de.Batch != 3 || de.File != "hand" {
				t.Errorf("error at %s row %d batch %d, want row %d batch 3", de.File, de.Row, de.Batch, 10+tc.row)
			}
		})
	}
}

func readAll(t *testing.T, files []string, shape Shape) ([]*Batch, error) {
	t.Helper()
	br := NewBatchReader(files, shape)
	defer br.Close()
	var out []*Batch
	for {
		b, err := br.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, b)
	}
}

// TestBatchReaderAcrossShards reads synthetic data whose train split spans two files.
func TestBatchReaderAcrossShards(t *testing.T) {
	dir := writeSynData(t, 6, 1)
	files, err := ShardFiles(dir, SplitTrain)
	if err != nil || len(files) != 2 {
		t.Fatalf("files %v err %v", files, err)
	}
	batches, err := readAll(t, files, Shape{MaxLen: synMaxLen, BatchSize: synBatch, VocabSize: synVocab})
	if err != nil {
		t.Fatal(err)
	}
	if len(batches) != 6 {
		t.Fatalf("%d batches, want 6", len(batches))
	}
	st, err := ScanSplit(files)
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range batches {
		if b.Index != int64(i) {
			t.Errorf("batch %d has index %d", i, b.Index)
		}
		if slices.Contains(b.Present, 0) || slices.Contains(b.KLPresent, 0) {
			t.Errorf("batch %d: every example and KL pair should be present: %v %v", i, b.Present, b.KLPresent)
		}
		if b.Rows != bucketSize(b.NumRows) || !slices.Contains(st.Buckets, b.Rows) {
			t.Errorf("batch %d: %d rows padded to %d; buckets %v", i, b.NumRows, b.Rows, st.Buckets)
		}
	}
	if st.Batches != 6 || st.MaxLen != synMaxLen || st.MaxExample != synBatch-1 || st.MaxTokenID >= synVocab {
		t.Errorf("scan %+v", st)
	}
}

func TestBatchReaderErrors(t *testing.T) {
	dir := t.TempDir()
	rows := handBatch()
	other := handBatch()
	for i := range other {
		other[i].BatchIndex = 4
	}
	// Batch 3, then 4, then 3 again: batch 3's rows are not contiguous.
	split := filepath.Join(dir, "split.parquet")
	writeShard(t, split, []kto.PackedRow{rows[0], other[0], other[1], rows[1]})
	garbage := filepath.Join(dir, "garbage.parquet")
	if err := os.WriteFile(garbage, []byte("PAR1 this is not parquet"), 0o644); err != nil {
		t.Fatal(err)
	}
	type wrongRow struct {
		Tokens []int32 `parquet:"tokens,list"`
	}
	wrong := filepath.Join(dir, "wrong.parquet")
	if err := parquet.WriteFile(wrong, []wrongRow{{Tokens: []int32{1, 2}}}); err != nil {
		t.Fatal(err)
	}
	shape := Shape{MaxLen: 8, BatchSize: 2, VocabSize: 32}
	for _, tc := range []struct {
		file string
		want error
	}{{split, ErrBatchSplit}, {garbage, ErrBadShard}, {wrong, ErrBadShard}} {
		_, err := readAll(t, []string{tc.file}, shape)
		var de *DataError
		if !errors.Is(err, tc.want) || !errors.As(err, &de) || de.File != tc.file {
			t.Errorf("%s: err = %v, want %v naming the file", filepath.Base(tc.file), err, tc.want)
		}
	}
}

func TestReadManifest(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadManifest(dir); !errors.Is(err, export.ErrNoManifest) {
		t.Errorf("missing manifest: err %v, want ErrNoManifest (a crashed prep leaves shards and no manifest)", err)
	}
	m := export.NewManifest()
	m.Config.MaxLen, m.Config.KTOBatchSize = 2048, 8
	m.Tokenizer.VocabSize = 32768
	m.KTO.DesirableWeight, m.KTO.UndesirableWeight = 1.25, 1
	if err := export.WriteManifest(dir, m); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(filepath.Join(dir, "manifest.json"))
	sum := sha256.Sum256(data)
	got, err := ReadManifest(dir)
	if err != nil || got.MaxLen != 2048 || got.BatchSize != 8 || got.VocabSize != 32768 || got.DesirableWeight != 1.25 ||
		got.UndesirableWeight != 1 || got.SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("manifest %+v, err %v", got, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadManifest(dir); !errors.Is(err, ErrBadManifest) {
		t.Errorf("broken manifest: err %v, want ErrBadManifest", err)
	}
}

// TestCheckedShards: the trainer reads only the shards its manifest lists, each with the
// manifest's sha256; another run's shard, a missing one or an unlisted one is an error
// naming the file.
func TestCheckedShards(t *testing.T) {
	fresh := func() (string, Manifest) {
		dir := writeSynData(t, 3, 1)
		m, err := ReadManifest(dir)
		if err != nil {
			t.Fatal(err)
		}
		return dir, m
	}
	dir, m := fresh()
	files, stamps, err := m.CheckedShards(SplitTrain)
	if err != nil || len(files) != 2 || len(stamps) != 2 {
		t.Fatalf("intact data: %v, %v, %v", files, stamps, err)
	}
	for i, f := range files {
		_, sum, _ := export.FileSHA256(f)
		if stamps[i].SHA256 != sum || stamps[i].Name != filepath.Base(f) {
			t.Errorf("stamp %+v for %s (sha256 %s)", stamps[i], f, sum)
		}
	}

	// A shard of the same name from another run (other rows): ErrChecksum naming it.
	other := writeSynDataSpec(t, 3, 1, synSpec{maxLen: synMaxLen, batch: synBatch, vocab: synVocab,
		promptMin: 2, promptSpan: 2, complMin: 2, complSpan: 2})
	copyFile(t, filepath.Join(other, PackedDir, "train-00001-of-00002.parquet"), files[1])
	if _, _, err := m.CheckedShards(SplitTrain); !errors.Is(err, export.ErrChecksum) || !strings.Contains(err.Error(), files[1]) {
		t.Errorf("shard from another run: %v, want ErrChecksum naming %s", err, files[1])
	}

	// A listed test shard gone: ErrMissingFile (evaluation used to be skipped silently).
	dir, m = fresh()
	test := filepath.Join(dir, PackedDir, "test-00000-of-00001.parquet")
	if err := os.Remove(test); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.CheckedShards(SplitTest); !errors.Is(err, export.ErrMissingFile) || !strings.Contains(err.Error(), test) {
		t.Errorf("missing test shard: %v, want ErrMissingFile naming %s", err, test)
	}

	// A shard the manifest does not list, beside the listed ones: ErrUnlisted.
	dir, m = fresh()
	extra := filepath.Join(dir, PackedDir, "train-00002-of-00003.parquet")
	copyFile(t, filepath.Join(dir, PackedDir, "train-00000-of-00002.parquet"), extra)
	if _, _, err := m.CheckedShards(SplitTrain); !errors.Is(err, export.ErrUnlisted) || !strings.Contains(err.Error(), extra) {
		t.Errorf("unlisted shard: %v, want ErrUnlisted naming %s", err, extra)
	}
}

// TestTrainChecksInputs: Run refuses, before step 1, a shard from another run and a missing
// test shard, naming the file; --no-eval does not read the test split.
func TestTrainChecksInputs(t *testing.T) {
	dir := writeSynData(t, 2, 1)
	test := filepath.Join(dir, PackedDir, "test-00000-of-00001.parquet")
	if err := os.Remove(test); err != nil {
		t.Fatal(err)
	}
	var steps int
	opts := Options{DataDir: dir, Steps: 1, Backend: "go", OnStep: func(StepMetrics) { steps++ }}
	if _, err := Run(stdcontext.Background(), opts); !errors.Is(err, export.ErrMissingFile) || !strings.Contains(err.Error(), test) || steps != 0 {
		t.Errorf("missing test shard: err %v after %d steps, want ErrMissingFile naming %s before step 1", err, steps, test)
	}
	opts.NoEval = true
	if _, err := Run(stdcontext.Background(), opts); err != nil || steps != 1 {
		t.Errorf("--no-eval with the test shard missing: err %v, %d steps", err, steps)
	}

	dir = writeSynData(t, 2, 0)
	shard := filepath.Join(dir, PackedDir, "train-00000-of-00002.parquet")
	rows := readShard(t, shard)
	rows[0].InputIDs[1] = (rows[0].InputIDs[1] + 1) % synVocab
	writeShard(t, shard, rows)
	steps = 0
	opts = Options{DataDir: dir, Steps: 1, Backend: "go", OnStep: func(StepMetrics) { steps++ }}
	if _, err := Run(stdcontext.Background(), opts); !errors.Is(err, export.ErrChecksum) || !strings.Contains(err.Error(), shard) || steps != 0 {
		t.Errorf("changed shard: err %v after %d steps, want ErrChecksum naming %s before step 1", err, steps, shard)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestBucketRows(t *testing.T) {
	want := map[int]int{0: 1, 1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 6, 7: 8, 8: 8, 9: 12, 13: 16, 17: 24, 25: 32, 33: 48}
	for n, w := range want {
		if got := bucketSize(n); got != w {
			t.Errorf("bucketSize(%d) = %d, want %d", n, got, w)
		}
	}
}

// TestCheckModel: the manifest's tokenizer against the model: vocabulary, the demo
// tokenizer with pretrained weights, and the model directory's tokenizer files.
func TestCheckModel(t *testing.T) {
	dir := t.TempDir()
	tokJSON := []byte(`{"model": {"type": "BPE"}}`)
	sum := sha256.Sum256(tokJSON)
	m := Manifest{VocabSize: 32768, Tokenizer: export.TokenizerInfo{Name: "mistral", SHA256: hex.EncodeToString(sum[:]), VocabSize: 32768}}
	src := ModelSource{Config: ModelConfig{VocabSize: 32768}, Dir: dir, Weights: true}
	var warned []string
	status := func(s string) { warned = append(warned, s) }
	if err := m.checkModel(src, status); err != nil {
		t.Errorf("no tokenizer files in the model directory: %v", err)
	}
	small := src
	small.Config.VocabSize = 32000
	if err := m.checkModel(small, status); !errors.Is(err, ErrWrongTokenizer) {
		t.Errorf("32768 ids for a vocab of 32000: %v, want ErrWrongTokenizer", err)
	}
	demo := m
	demo.Tokenizer.Demo = true
	if err := demo.checkModel(src, status); !errors.Is(err, ErrWrongTokenizer) {
		t.Errorf("demo tokenizer with pretrained weights: %v, want ErrWrongTokenizer", err)
	}
	random := src
	random.Weights = false
	if err := demo.checkModel(random, status); err != nil {
		t.Errorf("demo tokenizer with random weights: %v", err)
	}
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("tokenizer.model", []byte("another tokenizer"))
	if err := m.checkModel(src, status); err != nil || len(warned) != 1 {
		t.Errorf("one other tokenizer file: err %v, warnings %q; want one warning", err, warned)
	}
	write("tokenizer.json", []byte(`{"model": {"type": "Unigram"}}`))
	if err := m.checkModel(src, status); !errors.Is(err, ErrWrongTokenizer) {
		t.Errorf("both tokenizer files differ: %v, want ErrWrongTokenizer", err)
	}
	write("tokenizer.json", tokJSON)
	if err := m.checkModel(src, status); err != nil {
		t.Errorf("tokenizer.json is prep's: %v", err)
	}
}

// TestDamagedShard: a shard with flipped bytes (footer, page index, pages) or cut short
// gives an error naming the file, never a panic or a bare runtime error. The trainer itself
// would refuse these by their sha256 first; this is the reader underneath (ScanSplit, the
// batch reader) on files no manifest vouches for.
func TestDamagedShard(t *testing.T) {
	dir := writeSynData(t, 6, 0)
	src := filepath.Join(dir, PackedDir, "train-00000-of-00002.parquet")
	good, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "train-00000-of-00001.parquet")
	rng := rand.New(rand.NewPCG(3, 4))
	var failures int
	for trial := range 300 {
		b := slices.Clone(good)
		switch trial % 3 {
		case 0: // near the end: footer and page index
			for range 3 {
				i := len(b) - 1 - rng.IntN(min(2000, len(b)))
				b[i] ^= 1 << rng.IntN(8)
			}
		case 1: // anywhere
			for range 3 {
				b[rng.IntN(len(b))] ^= 1 << rng.IntN(8)
			}
		case 2:
			b = b[:rng.IntN(len(b))]
		}
		if err := os.WriteFile(bad, b, 0o644); err != nil {
			t.Fatal(err)
		}
		var scanErr, readErr error
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Fatalf("trial %d: panic %v", trial, p)
				}
			}()
			_, scanErr = ScanSplit([]string{bad})
			_, readErr = readAll(t, []string{bad}, Shape{MaxLen: synMaxLen, BatchSize: synBatch, VocabSize: synVocab})
		}()
		for _, err := range []error{scanErr, readErr} {
			if err == nil {
				continue // a flip in statistics or padding can be harmless
			}
			failures++
			var de *DataError
			if !errors.As(err, &de) || de.File != bad || !strings.HasPrefix(err.Error(), bad+": ") {
				t.Errorf("trial %d: %v; want a DataError naming %s", trial, err, bad)
			}
		}
	}
	if failures < 200 {
		t.Errorf("only %d of 600 reads of damaged files failed", failures)
	}
}
