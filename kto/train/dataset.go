package train

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/parquet-go/parquet-go"

	"github.com/ktoloader/ktoloader/kto"
)

// Split names a data split: the shards are kto_packed/{split}-*.parquet.
type Split string

// The splits prep writes.
const (
	SplitTrain Split = "train"
	SplitTest  Split = "test"
)

// PackedDir is the prep output subdirectory the trainer reads.
const PackedDir = "kto_packed"

// Sentinel errors of the data path; DataError says where.
var (
	ErrNoShards    = errors.New("no shards")
	ErrBadShard    = errors.New("bad shard")
	ErrBadRow      = errors.New("bad packed row")
	ErrBatchSplit  = errors.New("batch rows not contiguous")
	ErrBadManifest = errors.New("bad manifest")
)

// DataError locates a problem in the packed shards: errors.As for where, errors.Is for why.
type DataError struct {
	File  string // shard path
	Row   int64  // 0-based row within the file, −1 when not about a row
	Batch int64  // batch_index, −1 when unknown
	Err   error
}

func (e *DataError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Row >= 0 {
		fmt.Fprintf(&b, ": row %d", e.Row)
	}
	if e.Batch >= 0 {
		fmt.Fprintf(&b, " (batch %d)", e.Batch)
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *DataError) Unwrap() error { return e.Err }

// Manifest is what the trainer takes from prep's manifest.json, read as generic JSON so the
// trainer does not depend on export. Zero fields were absent.
type Manifest struct {
	MaxLen            int
	BatchSize         int
	DesirableWeight   float64
	UndesirableWeight float64
	VocabSize         int
	// SHA256 of manifest.json's bytes: it identifies the data for cached reference log-probs.
	SHA256 string
}

// ReadManifest reads DIR/manifest.json. A missing file is not an error (zero Manifest, nil):
// everything it gives can be inferred from the shards or set by flags.
func ReadManifest(dir string) (Manifest, error) {
	var m Manifest
	path := filepath.Join(dir, "manifest.json")
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return m, err
	}
	sum := sha256.Sum256(data)
	m.SHA256 = hex.EncodeToString(sum[:])
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		return m, fmt.Errorf("%s: %w: %v", path, ErrBadManifest, err)
	}
	num := func(paths ...string) float64 {
		for _, p := range paths {
			var cur any = doc
			for _, key := range strings.Split(p, ".") {
				obj, ok := cur.(map[string]any)
				if !ok {
					cur = nil
					break
				}
				cur = obj[key]
			}
			if f, ok := cur.(float64); ok {
				return f
			}
		}
		return 0
	}
	m.MaxLen = int(num("config.max_len"))
	m.BatchSize = int(num("config.kto_batch_size", "kto.batch_size"))
	m.DesirableWeight = num("kto.desirable_weight")
	m.UndesirableWeight = num("kto.undesirable_weight")
	m.VocabSize = int(num("tokenizer.vocab_size"))
	return m, nil
}

// ShardFiles lists DIR/kto_packed/{split}-*.parquet in name order (the -0000i-of-0000N
// names sort in training order).
func ShardFiles(dir string, split Split) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, PackedDir, string(split)+"-*.parquet"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	if len(files) == 0 {
		return nil, fmt.Errorf("%w: %s/%s-*.parquet", ErrNoShards, filepath.Join(dir, PackedDir), split)
	}
	return files, nil
}

// Shape fixes the sizes of every batch: rows of MaxLen tokens, BatchSize example slots, ids
// below VocabSize (0: unchecked). The graphs take a batch in the block layout of layout.go,
// whose sizes follow the batch; Batch is the packed-row view it is made from.
type Shape struct {
	MaxLen    int
	BatchSize int
	VocabSize int
}

// Batch is one KTO batch as the graphs consume it, host-side. Row arrays are Rows×MaxLen,
// row-major. The scored positions implement the shift of TRL's get_batch_logps
// (labels[:, 1:] against logits[:, :-1], prompt labels −100): position t of a row is
// scored when token t+1 is a completion token (loss_mask) of t's own sequence, and its
// label is token t+1. Only those positions reach the LM head: LabelPos lists them as flat
// indexes r·MaxLen+t, padded to a bucketed length with position 0, label 0 and slot −1.
// TargetSlot (KLSlot) is the example index when the sequence is a target (a KL pair), else −1.
type Batch struct {
	Index   int64 // batch_index
	NumRows int   // rows holding data; Rows − NumRows are padding rows
	Rows    int

	InputIDs, PositionIDs, SegmentIDs []int32

	NumLabels                            int // scored positions; the arrays below are padded
	LabelPos, Labels, TargetSlot, KLSlot []int32

	Desirable, Present, KLPresent []float32 // [BatchSize]

	Tokens int // non-padding tokens
}

// bucketSize rounds n up to the next of 1, 2, 3, 4, 6, 8, 12, 16, 24, …: at most 1.5× the
// size, and few distinct shapes (each compiles a graph). It sizes the rows of a batch and
// its scored positions.
func bucketSize(n int) int {
	if n <= 2 {
		return max(n, 1)
	}
	for b := 2; ; b *= 2 {
		if n <= b {
			return b
		}
		if n <= b+b/2 {
			return b + b/2
		}
	}
}

// BatchReader streams the batches of a split's shards in order. Rows of one batch must be
// consecutive; batch_index may jump but never return.
type BatchReader struct {
	shape Shape
	files []string

	fileIdx    int
	file       *os.File
	reader     *parquet.GenericReader[kto.PackedRow]
	readerDone bool // reader reached its end; close it once buf is drained
	rowInFile  int64
	buf        []kto.PackedRow
	bufPos     int

	pending     *kto.PackedRow // first row of the next batch, already read
	pendingRow  int64
	pendingFile string
	seen        map[int64]bool // batch indexes already returned
}

// NewBatchReader opens the shards. Close it when done.
func NewBatchReader(files []string, shape Shape) *BatchReader {
	return &BatchReader{shape: shape, files: files, seen: map[int64]bool{}}
}

// Close releases the open file.
func (br *BatchReader) Close() error {
	br.reader = nil
	if br.file != nil {
		err := br.file.Close()
		br.file = nil
		return err
	}
	return nil
}

func (br *BatchReader) fileName() string {
	if br.fileIdx < len(br.files) {
		return br.files[br.fileIdx]
	}
	return ""
}

// requiredColumns are the kto_packed columns the trainer reads.
var requiredColumns = []string{"input_ids", "segment_ids", "position_ids", "loss_mask",
	"segment_label", "segment_kl", "segment_example", "batch_index"}

// openNext opens files[fileIdx], checking it is Parquet with the packed columns
// (NewGenericReader panics on bad input; parquet.OpenFile returns errors).
func (br *BatchReader) openNext() error {
	path := br.files[br.fileIdx]
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	pf, err := parquet.OpenFile(f, st.Size())
	if err != nil {
		f.Close()
		return &DataError{File: path, Row: -1, Batch: -1, Err: fmt.Errorf("%w: %v", ErrBadShard, err)}
	}
	have := map[string]bool{}
	for _, field := range pf.Schema().Fields() {
		have[field.Name()] = true
	}
	for _, col := range requiredColumns {
		if !have[col] {
			f.Close()
			return &DataError{File: path, Row: -1, Batch: -1, Err: fmt.Errorf("%w: no column %q", ErrBadShard, col)}
		}
	}
	err = catchPanic(func() { br.reader = parquet.NewGenericReader[kto.PackedRow](pf) })
	if err != nil {
		f.Close()
		return &DataError{File: path, Row: -1, Batch: -1, Err: fmt.Errorf("%w: %v", ErrBadShard, err)}
	}
	br.file = f
	br.rowInFile = 0
	return nil
}

// nextRow returns the next row of the split and its index in its file.
func (br *BatchReader) nextRow() (kto.PackedRow, int64, error) {
	for {
		if br.bufPos < len(br.buf) {
			row := br.buf[br.bufPos]
			br.bufPos++
			br.rowInFile++
			return row, br.rowInFile - 1, nil
		}
		if br.reader != nil && br.readerDone {
			_ = br.Close()
			br.fileIdx++
			br.readerDone = false
		}
		if br.reader == nil {
			if br.fileIdx >= len(br.files) {
				return kto.PackedRow{}, 0, io.EOF
			}
			if err := br.openNext(); err != nil {
				return kto.PackedRow{}, 0, err
			}
		}
		// Fresh rows each time: the reader may reuse the slices of the rows it is given.
		buf := make([]kto.PackedRow, 64)
		var n int
		var readErr error
		if perr := catchPanic(func() { n, readErr = br.reader.Read(buf) }); perr != nil {
			readErr = perr
		}
		br.buf, br.bufPos = buf[:n], 0
		switch {
		case readErr == io.EOF || (readErr == nil && n == 0):
			br.readerDone = true
		case readErr != nil:
			return kto.PackedRow{}, 0, &DataError{File: br.fileName(), Row: br.rowInFile, Batch: -1,
				Err: fmt.Errorf("%w: %v", ErrBadShard, readErr)}
		}
	}
}

// rawBatch is the rows of one batch before conversion.
type rawBatch struct {
	index int64
	rows  []kto.PackedRow
	file  string
	first int64 // row index in file of rows[0]
}

// nextRaw groups consecutive rows with the same batch_index.
func (br *BatchReader) nextRaw() (*rawBatch, error) {
	var first kto.PackedRow
	var firstRow int64
	var file string
	if br.pending != nil {
		first, firstRow = *br.pending, br.pendingRow
		br.pending = nil
		file = br.pendingFile
	} else {
		var err error
		first, firstRow, err = br.nextRow()
		if err != nil {
			return nil, err
		}
		file = br.fileName()
	}
	rb := &rawBatch{index: first.BatchIndex, rows: []kto.PackedRow{first}, file: file, first: firstRow}
	if br.seen[rb.index] {
		return nil, &DataError{File: file, Row: firstRow, Batch: rb.index, Err: ErrBatchSplit}
	}
	br.seen[rb.index] = true
	for {
		row, idx, err := br.nextRow()
		if err == io.EOF {
			return rb, nil
		}
		if err != nil {
			return nil, err
		}
		if row.BatchIndex != rb.index {
			br.pending, br.pendingRow, br.pendingFile = &row, idx, br.fileName()
			return rb, nil
		}
		rb.rows = append(rb.rows, row)
	}
}

// Next returns the next batch, or io.EOF after the last.
func (br *BatchReader) Next() (*Batch, error) {
	rb, err := br.nextRaw()
	if err != nil {
		return nil, err
	}
	return br.shape.convert(rb)
}

// convert checks the rows of one batch and lays them out as tensors.
func (s Shape) convert(rb *rawBatch) (*Batch, error) {
	bad := func(i int, format string, args ...any) error {
		return &DataError{File: rb.file, Row: rb.first + int64(i), Batch: rb.index,
			Err: fmt.Errorf("%w: %s", ErrBadRow, fmt.Sprintf(format, args...))}
	}
	n := len(rb.rows)
	rows := bucketSize(n)
	T := s.MaxLen
	b := &Batch{
		Index: rb.index, NumRows: n, Rows: rows,
		InputIDs: make([]int32, rows*T), PositionIDs: make([]int32, rows*T),
		SegmentIDs: make([]int32, rows*T),
		Desirable:  make([]float32, s.BatchSize), Present: make([]float32, s.BatchSize),
		KLPresent: make([]float32, s.BatchSize),
	}
	for i, row := range rb.rows {
		if len(row.InputIDs) != T || len(row.SegmentIDs) != T || len(row.PositionIDs) != T || len(row.LossMask) != T {
			return nil, bad(i, "lists of length %d/%d/%d/%d, want max_len %d",
				len(row.InputIDs), len(row.SegmentIDs), len(row.PositionIDs), len(row.LossMask), T)
		}
		nseg := len(row.SegmentLabel)
		if len(row.SegmentKL) != nseg || len(row.SegmentExample) != nseg {
			return nil, bad(i, "segment lists of lengths %d/%d/%d differ", nseg, len(row.SegmentKL), len(row.SegmentExample))
		}
		for j := range nseg {
			ex := row.SegmentExample[j]
			if ex < 0 || int(ex) >= s.BatchSize {
				return nil, bad(i, "segment %d: segment_example %d outside the batch size %d", j+1, ex, s.BatchSize)
			}
			if row.SegmentLabel[j] != 0 && row.SegmentLabel[j] != 1 {
				return nil, bad(i, "segment %d: segment_label %d (want 0 or 1)", j+1, row.SegmentLabel[j])
			}
			present := b.Present
			if row.SegmentKL[j] {
				present = b.KLPresent
			}
			if present[ex] != 0 {
				return nil, bad(i, "segment %d: example %d (kl=%v) appears twice in the batch", j+1, ex, row.SegmentKL[j])
			}
			present[ex] = 1
			if !row.SegmentKL[j] {
				b.Desirable[ex] = float32(row.SegmentLabel[j])
			}
		}
		off := i * T
		for t := range T {
			id, seg := row.InputIDs[t], row.SegmentIDs[t]
			if id < 0 || (s.VocabSize > 0 && int(id) >= s.VocabSize) {
				return nil, bad(i, "input_ids[%d] = %d outside the vocabulary of %d", t, id, s.VocabSize)
			}
			if seg < 0 || int(seg) > nseg {
				return nil, bad(i, "segment_ids[%d] = %d, but the row describes %d segments", t, seg, nseg)
			}
			if row.PositionIDs[t] < 0 {
				return nil, bad(i, "position_ids[%d] = %d", t, row.PositionIDs[t])
			}
			b.InputIDs[off+t], b.PositionIDs[off+t], b.SegmentIDs[off+t] = id, row.PositionIDs[t], seg
			if seg != 0 {
				b.Tokens++
			}
			if seg == 0 || t+1 >= T || row.SegmentIDs[t+1] != seg || row.LossMask[t+1] == 0 {
				continue
			}
			target, kl := int32(-1), int32(-1)
			if row.SegmentKL[seg-1] {
				kl = row.SegmentExample[seg-1]
			} else {
				target = row.SegmentExample[seg-1]
			}
			b.LabelPos = append(b.LabelPos, int32(off+t))
			b.Labels = append(b.Labels, row.InputIDs[t+1])
			b.TargetSlot = append(b.TargetSlot, target)
			b.KLSlot = append(b.KLSlot, kl)
		}
	}
	b.NumLabels = len(b.Labels)
	for range bucketSize(b.NumLabels) - b.NumLabels {
		b.LabelPos = append(b.LabelPos, 0)
		b.Labels = append(b.Labels, 0)
		b.TargetSlot = append(b.TargetSlot, -1)
		b.KLSlot = append(b.KLSlot, -1)
	}
	return b, nil
}

// catchPanic runs fn and returns a panic as an error: parquet-go and GomlX report some
// failures by panicking.
func catchPanic(fn func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if e, ok := r.(error); ok {
				err = e
			} else {
				err = fmt.Errorf("%v", r)
			}
		}
	}()
	fn()
	return nil
}

// SplitStats summarises a pass over a split.
type SplitStats struct {
	Batches         int
	Rows            int
	MaxRowsPerBatch int
	MaxTokenID      int32
	MaxExample      int32 // largest segment_example
	MaxLen          int   // row length seen (0 when no rows)
	Tokens          int64
	Buckets         []int // distinct padded row counts, sorted
}

// ScanSplit reads every row of the files once: it validates grouping and row lengths and
// finds what the manifest may not say (row length, batch size, vocabulary bound).
func ScanSplit(files []string) (SplitStats, error) {
	var st SplitStats
	// Only grouping is used here (nextRaw), so the reader needs no Shape; convert's checks,
	// which need one, run when batches are read for training.
	br := NewBatchReader(files, Shape{})
	defer br.Close()
	buckets := map[int]bool{}
	for {
		rb, err := br.nextRaw()
		if err == io.EOF {
			break
		}
		if err != nil {
			return st, err
		}
		st.Batches++
		st.Rows += len(rb.rows)
		st.MaxRowsPerBatch = max(st.MaxRowsPerBatch, len(rb.rows))
		buckets[bucketSize(len(rb.rows))] = true
		for i, row := range rb.rows {
			if st.MaxLen == 0 {
				st.MaxLen = len(row.InputIDs)
			}
			if len(row.InputIDs) != st.MaxLen {
				return st, &DataError{File: rb.file, Row: rb.first + int64(i), Batch: rb.index,
					Err: fmt.Errorf("%w: row of %d tokens, earlier rows have %d", ErrBadRow, len(row.InputIDs), st.MaxLen)}
			}
			for t, id := range row.InputIDs {
				st.MaxTokenID = max(st.MaxTokenID, id)
				if t < len(row.SegmentIDs) && row.SegmentIDs[t] != 0 {
					st.Tokens++
				}
			}
			for _, ex := range row.SegmentExample {
				st.MaxExample = max(st.MaxExample, ex)
			}
		}
	}
	for b := range buckets {
		st.Buckets = append(st.Buckets, b)
	}
	slices.Sort(st.Buckets)
	return st, nil
}
