package export

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/zstd"
)

// Format selects which files a shard writer produces.
type Format string

// Formats.
const (
	FormatParquet Format = "parquet"
	FormatArrow   Format = "arrow"
	FormatBoth    Format = "both"
)

// ParseFormat reads a --format value; "" is parquet.
func ParseFormat(s string) (Format, error) {
	switch Format(s) {
	case "", FormatParquet:
		return FormatParquet, nil
	case FormatArrow, FormatBoth:
		return Format(s), nil
	}
	return "", fmt.Errorf("%w %q (want parquet, arrow or both)", ErrFormat, s)
}

func (f Format) extensions() []string {
	switch f {
	case FormatArrow:
		return []string{".arrow"}
	case FormatBoth:
		return []string{".parquet", ".arrow"}
	}
	return []string{".parquet"}
}

// Shard kinds: the subdirectories of an output directory.
const (
	KindKTO       = "kto"
	KindKTOPacked = "kto_packed"
	KindSFT       = "sft"
)

// DefaultRowGroupRows bounds a Parquet row group (and an Arrow record batch): 1024 packed rows
// of 2048 tokens is 32 MiB of int32 columns buffered per writer, and a reader's unit of
// random access stays small.
const DefaultRowGroupRows = 1024

// CreatedBy is the Parquet created_by of every shard. parquet-go's default embeds its
// module version and build hash from the binary's build info, which differs between a test
// binary and a release build; a constant keeps files byte-identical.
const CreatedBy = "ktoloader"

// zstdCodec is shared by every writer: it pools its encoders and is safe for concurrent
// use. SpeedFastest: packed columns are mostly small ids and padding, where higher levels
// buy a few percent for twice the time.
var zstdCodec = &zstd.Codec{Level: zstd.SpeedFastest}

// WriterOptions configure a ShardWriter. Zero fields take their defaults.
type WriterOptions struct {
	Format Format // parquet (default), arrow or both
	// A shard is closed and the next one begun when it holds ShardRows rows, or when the
	// next row would take it past ShardBytes approximate bytes (list elements × their width,
	// plus string lengths). Zero means no limit; a shard always holds at least one row.
	ShardRows  int64
	ShardBytes int64
	// RowGroupRows is the most rows in a Parquet row group or Arrow record batch
	// (default DefaultRowGroupRows).
	RowGroupRows int64
	// LargeText writes the text columns (prompt, completion, behavior, source,
	// segment_source) without min/max statistics: parquet-go puts each page's whole min and
	// max value in its header and the column chunk's in the footer, so one 50 MB prompt made
	// a 300 MB shard whose page header (over 4 MiB) no reader accepts. Prep sets it for a run
	// that wrote a text over MaxTextBytes (see IsLargeText); other runs keep the statistics,
	// so their files do not change.
	LargeText bool
	// BeforeRename, when set, is called by Close with the final paths of the shards before
	// they are renamed into place (internal/outdir journals them); its error fails Close.
	BeforeRename func(paths []string) error
}

// MaxTextBytes is the longest text (prompt, completion, behavior or source) a run may hold
// and still write min/max statistics for its text columns (WriterOptions.LargeText). Chat
// rows are kilobytes; 256 KiB keeps a page header's two copies well under readers' limits.
const MaxTextBytes = 256 << 10

// IsLargeText reports whether a text of n bytes is over MaxTextBytes.
func IsLargeText(n int) bool { return n > MaxTextBytes }

// textColumnOptions are the parquet-go options that leave T's text (byte array) columns
// without page statistics and column chunk bounds.
func textColumnOptions[T any]() []parquet.WriterOption {
	schema := parquet.SchemaOf(new(T))
	var opts []parquet.WriterOption
	for _, path := range schema.Columns() {
		leaf, ok := schema.Lookup(path...)
		if !ok || leaf.Node.Type().Kind() != parquet.ByteArray {
			continue
		}
		opts = append(opts, parquet.SkipPageStatistics(path...), parquet.SkipPageBounds(path...))
	}
	return opts
}

// FileInfo describes one finished shard file, as the manifest lists it.
type FileInfo struct {
	Path   string `json:"path"` // relative to the output directory, forward slashes
	Format Format `json:"format"`
	Kind   string `json:"kind"`  // kto, kto_packed, sft
	Split  string `json:"split"` // train, test
	Rows   int64  `json:"rows"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// Hugging Face's split-name rule (datasets.splits: ^\w+(\.\w+)*$).
var namePattern = regexp.MustCompile(`^\w+(\.\w+)*$`)

// ShardWriter writes rows of type T to OUT/kind/split-XXXXX-of-YYYYY.{parquet,arrow}. The
// number of shards is known only at Close, so shards are written as .tmp- files and renamed
// then; a crash leaves nothing that looks finished. Not safe for concurrent use: one
// writer per kind and split, fed in final row order.
type ShardWriter[T any] struct {
	out, kind, split string
	opt              WriterOptions
	l                *layout
	done             []*shard // finished, still under temporary names
	cur              *shard
	err              error // sticky: once set, only Abort is useful
}

// shard is one shard being written: one file per format.
type shard struct {
	index int
	rows  int64
	bytes int64 // approximate, for ShardBytes
	files []*shardFile
}

type shardFile struct {
	format Format
	tmp    string
	f      *os.File
	bw     *bufio.Writer
	h      hash.Hash
	n      int64
	pq     interface {
		Close() error
	}
	pqWrite func(rows reflect.Value) error // writes a []T
	ar      *arrowWriter
}

// Write writes through the buffer and into the running sha256, counting bytes: the digest
// and size in the manifest come from the bytes as written, with no second read.
func (s *shardFile) Write(p []byte) (int, error) {
	s.h.Write(p)
	s.n += int64(len(p))
	return s.bw.Write(p)
}

// NewShardWriter prepares a writer of kind/split shards under out. It creates out/kind;
// nothing else is written until the first row.
func NewShardWriter[T any](out, kind, split string, opt WriterOptions) (*ShardWriter[T], error) {
	l, err := layoutOf[T]()
	if err != nil {
		return nil, err
	}
	if !namePattern.MatchString(kind) {
		return nil, fmt.Errorf("export: invalid shard kind %q", kind)
	}
	if !namePattern.MatchString(split) {
		return nil, fmt.Errorf("export: invalid split name %q (want letters, digits, _ and .)", split)
	}
	if opt.Format, err = ParseFormat(string(opt.Format)); err != nil {
		return nil, err
	}
	if opt.ShardRows < 0 || opt.ShardBytes < 0 || opt.RowGroupRows < 0 {
		return nil, fmt.Errorf("export: negative WriterOptions (ShardRows %d, ShardBytes %d, RowGroupRows %d)",
			opt.ShardRows, opt.ShardBytes, opt.RowGroupRows)
	}
	if opt.RowGroupRows == 0 {
		opt.RowGroupRows = DefaultRowGroupRows
	}
	if err := os.MkdirAll(filepath.Join(out, kind), 0o755); err != nil {
		return nil, err
	}
	return &ShardWriter[T]{out: out, kind: kind, split: split, opt: opt, l: l}, nil
}

// Write appends rows, starting new shards as the limits say.
func (w *ShardWriter[T]) Write(rows ...T) error {
	if w.err != nil {
		return w.err
	}
	for start := 0; start < len(rows); {
		// The run of rows that goes into the current shard.
		end := start
		for end < len(rows) {
			size := int64(0)
			if w.opt.ShardBytes > 0 {
				size = approxBytes(w.l, reflect.ValueOf(&rows[end]).Elem())
			}
			if w.cur != nil && w.cur.rows > 0 && w.full(w.cur, size) {
				break
			}
			if w.cur == nil {
				if err := w.open(); err != nil {
					return w.fail(err)
				}
			}
			w.cur.rows++
			w.cur.bytes += size
			end++
		}
		if end > start {
			if err := w.cur.write(reflect.ValueOf(rows[start:end])); err != nil {
				return w.fail(err)
			}
			start = end
		}
		if start < len(rows) { // the current shard is full
			if err := w.finishCurrent(); err != nil {
				return w.fail(err)
			}
		}
	}
	return nil
}

func (w *ShardWriter[T]) full(s *shard, next int64) bool {
	return (w.opt.ShardRows > 0 && s.rows >= w.opt.ShardRows) ||
		(w.opt.ShardBytes > 0 && s.bytes+next > w.opt.ShardBytes)
}

func (w *ShardWriter[T]) fail(err error) error {
	w.err = err
	return err
}

func (w *ShardWriter[T]) open() error {
	s := &shard{index: len(w.done)}
	w.cur = s
	for _, ext := range w.opt.Format.extensions() {
		f, err := os.CreateTemp(filepath.Join(w.out, w.kind), TempPattern(fmt.Sprintf("%s-%05d%s", w.split, s.index, ext)))
		if err != nil {
			return err
		}
		sf := &shardFile{tmp: f.Name(), f: f, h: sha256.New()}
		sf.bw = bufio.NewWriterSize(f, 1<<20)
		s.files = append(s.files, sf)
		if ext == ".arrow" {
			sf.format = FormatArrow
			if sf.ar, err = newArrowWriter(sf, w.l, int(w.opt.RowGroupRows)); err != nil {
				return err
			}
			continue
		}
		sf.format = FormatParquet
		opts := []parquet.WriterOption{
			parquet.Compression(zstdCodec),
			parquet.MaxRowsPerRowGroup(w.opt.RowGroupRows),
			&parquet.WriterConfig{CreatedBy: CreatedBy},
		}
		if w.opt.LargeText {
			opts = append(opts, textColumnOptions[T]()...)
		}
		pw := parquet.NewGenericWriter[T](sf, opts...)
		sf.pq = pw
		sf.pqWrite = func(rows reflect.Value) error {
			_, err := pw.Write(rows.Interface().([]T))
			return err
		}
	}
	return nil
}

// write writes rows (a []T) to every file of the shard.
func (s *shard) write(rows reflect.Value) error {
	for _, sf := range s.files {
		if sf.ar != nil {
			for i := 0; i < rows.Len(); i++ {
				if err := sf.ar.append(rows.Index(i)); err != nil {
					return &FileError{Path: sf.tmp, Err: err}
				}
			}
			continue
		}
		if err := sf.pqWrite(rows); err != nil {
			return &FileError{Path: sf.tmp, Err: err}
		}
	}
	return nil
}

// finish completes the shard's files: footer, flush, fsync, close.
func (s *shard) finish() error {
	var errs []error
	for _, sf := range s.files {
		var err error
		switch {
		case sf.ar != nil:
			err = sf.ar.close()
		case sf.pq != nil:
			err = sf.pq.Close()
		}
		if err == nil {
			err = sf.bw.Flush()
		}
		if err == nil {
			err = sf.f.Sync()
		}
		if cerr := sf.f.Close(); err == nil {
			err = cerr
		}
		// A finished shard keeps only its name, size and hash until Close renames it: its
		// writers' buffers (parquet-go keeps a row group's pages, ~MBs) would otherwise live
		// until the end of the run, one set per shard written.
		sf.pq, sf.pqWrite, sf.ar, sf.bw, sf.f = nil, nil, nil, nil, nil
		if err != nil {
			errs = append(errs, &FileError{Path: sf.tmp, Err: err})
		}
	}
	return errors.Join(errs...)
}

func (w *ShardWriter[T]) finishCurrent() error {
	s := w.cur
	w.cur = nil
	w.done = append(w.done, s)
	return s.finish()
}

// Close finishes the last shard and renames every shard to its final
// split-XXXXX-of-YYYYY name, then syncs the directory. A writer that got no rows still
// writes one empty shard (the schema, zero rows), so that every split a run announces has
// a file a reader can open. The files come back in shard order, Parquet before Arrow.
// After a failure Close removes the temporary files and returns the error.
func (w *ShardWriter[T]) Close() ([]FileInfo, error) {
	if w.err != nil {
		w.Abort()
		return nil, w.err
	}
	if w.cur == nil && len(w.done) == 0 {
		if err := w.open(); err != nil {
			w.fail(err)
			w.Abort()
			return nil, err
		}
	}
	if w.cur != nil {
		if err := w.finishCurrent(); err != nil {
			w.fail(err)
			w.Abort()
			return nil, err
		}
	}
	w.err = ErrWriterClosed
	n := len(w.done)
	if w.opt.BeforeRename != nil {
		var final []string
		for _, s := range w.done {
			for _, sf := range s.files {
				final = append(final, filepath.Join(w.out, w.kind, fmt.Sprintf("%s-%05d-of-%05d.%s", w.split, s.index, n, sf.format)))
			}
		}
		if err := w.opt.BeforeRename(final); err != nil {
			w.removeTemps()
			return nil, err
		}
	}
	var infos []FileInfo
	for _, s := range w.done {
		for _, sf := range s.files {
			name := fmt.Sprintf("%s-%05d-of-%05d.%s", w.split, s.index, n, sf.format)
			if err := os.Rename(sf.tmp, filepath.Join(w.out, w.kind, name)); err != nil {
				w.removeTemps()
				return nil, err
			}
			sf.tmp = ""
			infos = append(infos, FileInfo{
				Path:   path.Join(w.kind, name),
				Format: sf.format,
				Kind:   w.kind,
				Split:  w.split,
				Rows:   s.rows,
				Bytes:  sf.n,
				SHA256: hex.EncodeToString(sf.h.Sum(nil)),
			})
		}
	}
	if err := syncDir(filepath.Join(w.out, w.kind)); err != nil {
		return nil, err
	}
	return infos, nil
}

// Abort stops the writer and removes its temporary files. Renamed (finished) files are not
// touched: a run that fails after Close has its manifest missing, which PrepareOutDir
// recognizes.
func (w *ShardWriter[T]) Abort() {
	if w.cur != nil {
		w.cur.finish() // close the files; their content no longer matters
		w.done = append(w.done, w.cur)
		w.cur = nil
	}
	w.removeTemps()
	if w.err == nil {
		w.err = ErrWriterClosed
	}
}

func (w *ShardWriter[T]) removeTemps() {
	for _, s := range w.done {
		for _, sf := range s.files {
			if sf.tmp != "" {
				os.Remove(sf.tmp)
				sf.tmp = ""
			}
		}
	}
}

// approxBytes is a row's size for ShardBytes: list elements times their width, string bytes.
func approxBytes(l *layout, v reflect.Value) int64 {
	var n int64
	for _, c := range l.cols {
		f := v.Field(c.field)
		switch {
		case c.list && c.elem == sString:
			for i := 0; i < f.Len(); i++ {
				n += int64(f.Index(i).Len())
			}
		case c.list:
			n += int64(f.Len()) * elemWidth(c.elem)
		case c.elem == sString:
			n += int64(f.Len())
		default:
			n += elemWidth(c.elem)
		}
	}
	return n
}

func elemWidth(s scalar) int64 {
	switch s {
	case sBool:
		return 1
	case sInt64, sFloat64:
		return 8
	}
	return 4
}
