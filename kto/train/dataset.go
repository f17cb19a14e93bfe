package train

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ktoloader/ktoloader/export"
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
	ErrBadManifest = export.ErrBadManifest
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

// Manifest is what the trainer takes from prep's manifest.json, read by export (the
// package that writes it). Zero fields were absent.
type Manifest struct {
	MaxLen            int
	BatchSize         int
	DesirableWeight   float64
	UndesirableWeight float64
	VocabSize         int
	Tokenizer         export.TokenizerInfo
	// SHA256 of manifest.json's bytes: it identifies the data for cached reference log-probs.
	SHA256 string

	dir string
	m   *export.Manifest
}

// ReadManifest reads DIR/manifest.json. Without one DIR is not a finished prep run (a
// crashed run leaves shards and no manifest): export.ErrNoManifest.
func ReadManifest(dir string) (Manifest, error) {
	em, sum, err := export.ReadManifestSHA256(dir)
	if err != nil {
		return Manifest{}, err
	}
	m := Manifest{SHA256: sum, dir: dir, m: em,
		DesirableWeight: em.KTO.DesirableWeight, UndesirableWeight: em.KTO.UndesirableWeight,
		VocabSize: em.Tokenizer.VocabSize, Tokenizer: em.Tokenizer}
	// A manifest's config holds the flags as given; older manifests without them fall back
	// to what the run recorded of its output.
	m.MaxLen = cmp.Or(em.Config.MaxLen, em.Packing.MaxLen)
	m.BatchSize = cmp.Or(em.Config.KTOBatchSize, em.KTO.BatchSize)
	return m, nil
}

// ShardFiles lists the split's kto_packed shards that DIR's manifest lists, in training
// order, without checking them (CheckedShards does).
func ShardFiles(dir string, split Split) ([]string, error) {
	m, err := ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, fi := range m.m.Shards(PackedDir, string(split)) {
		files = append(files, filepath.Join(dir, filepath.FromSlash(fi.Path)))
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%w: the manifest lists no %s/%s-* shard", ErrNoShards, filepath.Join(dir, PackedDir), split)
	}
	return files, nil
}

// CheckedShards returns the split's kto_packed shards after checking each against the
// manifest's size and sha256 (export.CheckShards: a shard from another run, a missing one
// or an unlisted one is an error naming it), with their stamps for the reference cache.
// Every shard is hashed here, once per run; nothing hashes it again. ErrNoShards when the
// manifest lists none.
func (m Manifest) CheckedShards(split Split) ([]string, []shardStamp, error) {
	infos, err := export.CheckShards(m.dir, m.m, PackedDir, string(split))
	if err != nil {
		return nil, nil, err
	}
	if len(infos) == 0 {
		return nil, nil, fmt.Errorf("%w: the manifest lists no %s/%s-* shard", ErrNoShards, filepath.Join(m.dir, PackedDir), split)
	}
	files := make([]string, len(infos))
	stamps := make([]shardStamp, len(infos))
	for i, fi := range infos {
		files[i] = filepath.Join(m.dir, filepath.FromSlash(fi.Path))
		stamps[i] = shardStamp{Name: path.Base(fi.Path), Size: fi.Bytes, SHA256: fi.SHA256}
	}
	return files, stamps, nil
}

// Lists reports whether the manifest lists any kto_packed shard of split.
func (m Manifest) Lists(split Split) bool {
	return m.m != nil && len(m.m.Shards(PackedDir, string(split))) > 0
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
	reader     *export.Reader[kto.PackedRow]
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
	if br.reader != nil {
		err := br.reader.Close()
		br.reader = nil
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

// shardErr makes export's error about a shard a DataError: export.FileError already names
// the file, and the row group where one is known.
func shardErr(path string, row int64, err error) error {
	var fe *export.FileError
	if errors.As(err, &fe) {
		path, err = fe.Path, fe.Err
	}
	return &DataError{File: path, Row: row, Batch: -1, Err: fmt.Errorf("%w: %w", ErrBadShard, err)}
}

// openNext opens files[fileIdx] through export's reader, which checks that the columns are
// kto_packed's and never panics on a damaged file.
func (br *BatchReader) openNext() error {
	path := br.files[br.fileIdx]
	r, err := export.OpenReader[kto.PackedRow](path)
	if err != nil {
		return shardErr(path, -1, err)
	}
	br.reader = r
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
		// Fresh rows each time: the batch keeps them.
		buf := make([]kto.PackedRow, 64)
		n, readErr := br.reader.Read(buf)
		br.buf, br.bufPos = buf[:n], 0
		switch {
		case readErr == io.EOF || (readErr == nil && n == 0):
			br.readerDone = true
		case readErr != nil:
			return kto.PackedRow{}, 0, shardErr(br.fileName(), -1, readErr)
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

// ErrWrongTokenizer marks data tokenized for another model than the one given.
var ErrWrongTokenizer = errors.New("the data was tokenized for another model")

// checkModel compares what the manifest says the ids were made with against the model,
// before any weight is loaded: more ids than the model's vocabulary, the demo tokenizer
// with pretrained weights, or a model directory whose tokenizer files are all other than
// the one prep used (its sha256 is the file's) are errors. With only one tokenizer file in
// the directory a mismatch may be the other format of the same tokenizer (prep given
// tokenizer.json, the directory holding tokenizer.model): that is reported, not refused.
func (m Manifest) checkModel(src ModelSource, status func(string)) error {
	tok := m.Tokenizer
	if m.VocabSize > src.Config.VocabSize {
		name := "its tokenizer"
		if tok.Name != "" {
			name += " " + tok.Name
		}
		return fmt.Errorf("%w (%w): %s has %d ids, the model's vocab_size is %d", ErrWrongTokenizer, ErrBadModelConfig,
			name, m.VocabSize, src.Config.VocabSize)
	}
	if !src.Weights || src.Dir == "" {
		return nil
	}
	if tok.Demo {
		return fmt.Errorf("%w: prep used the demo tokenizer, whose ids mean nothing to the pretrained weights in %s; run prep with --tokenizer %s",
			ErrWrongTokenizer, src.Dir, src.Dir)
	}
	var found []string
	for _, name := range []string{"tokenizer.json", "tokenizer.model"} {
		p := filepath.Join(src.Dir, name)
		_, sum, err := export.FileSHA256(p)
		if err != nil {
			continue
		}
		if sum == tok.SHA256 {
			return nil
		}
		found = append(found, name)
	}
	switch len(found) {
	case 0:
		return nil
	case 1:
		status(fmt.Sprintf("warning: %s in %s is not the tokenizer the data was made with (%s, sha256 %.12s…); if it is the same tokenizer in another format, ignore this",
			found[0], src.Dir, tok.Name, tok.SHA256))
		return nil
	}
	return fmt.Errorf("%w: neither tokenizer file in %s has the sha256 of the tokenizer prep used (%s, %.12s…); run prep with --tokenizer %s",
		ErrWrongTokenizer, src.Dir, tok.Name, tok.SHA256, src.Dir)
}
