package train

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/parquet-go/parquet-go"

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
	m, err := ReadManifest(dir)
	if err != nil || m != (Manifest{}) {
		t.Errorf("missing manifest: %+v, %v; want zero and nil", m, err)
	}
	js := `{"config": {"max_len": 2048, "kto_batch_size": 8}, "tokenizer": {"vocab_size": 32768},
		"kto": {"desirable_weight": 1.25, "undesirable_weight": 1.0}}`
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), []byte(js), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err = ReadManifest(dir)
	if err != nil || m.MaxLen != 2048 || m.BatchSize != 8 || m.VocabSize != 32768 || m.DesirableWeight != 1.25 ||
		m.UndesirableWeight != 1 || len(m.SHA256) != 64 {
		t.Errorf("manifest %+v, err %v", m, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadManifest(dir); !errors.Is(err, ErrBadManifest) {
		t.Errorf("broken manifest: err %v, want ErrBadManifest", err)
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
