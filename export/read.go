package export

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	arrowpq "github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// Reader reads the rows of one shard (.parquet or .arrow, by extension) as values of T, the
// row struct it was written from (kto.KTORow, kto.PackedRow, kto.SFTRow). It never panics on
// a damaged file: decoding failures are ErrCorrupt and a file whose columns are not T's is
// ErrSchema, both wrapped in a *FileError naming the file.
type Reader[T any] struct {
	path string
	f    *os.File
	pf   *file.Reader         // Parquet, decoded by arrow's reader (pqarrow)
	rr   pqarrow.RecordReader // its record batches
	rec  arrow.RecordBatch    // the one being read, retained until the next
	pq   recordRows[T]        // rows from rr's batches
	rows int64                // the footer's row count (Parquet)
	read int64                // rows returned so far (Parquet)
	// groupEnd[i] is the row after row group i; decoded the rows of the batches fetched so
	// far: together they say where a decoding error is.
	groupEnd []int64
	decoded  int64
	ar       *arrowReader[T]
}

// OpenReader opens the shard at path for reading rows of type T.
func OpenReader[T any](path string) (*Reader[T], error) {
	l, err := layoutOf[T]()
	if err != nil {
		return nil, err
	}
	format, err := formatOfPath(path)
	if err != nil {
		return nil, &FileError{Path: path, Err: err}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	r := &Reader[T]{path: path, f: f, rows: -1}
	if format == FormatArrow {
		r.ar, err = openArrow[T](path, f, l)
	} else {
		err = r.openParquet(l)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return r, nil
}

// parquetBatchRows is how many rows arrow's Parquet reader decodes at a time.
const parquetBatchRows = 256

// openParquet validates the file with parquet-go (footer, schema against T, row counts),
// whose checks return errors, then reads it with arrow's Parquet reader, which decodes a
// column at a time (parquet-go's GenericReader rebuilds rows value by value: 3–5× slower on
// these list columns). Arrow's allocations are bounded, and a recover turns its panics on
// damaged data into ErrCorrupt.
func (r *Reader[T]) openParquet(l *layout) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = corruptf(r.path, "parquet: %v", p)
		}
	}()
	st, err := r.f.Stat()
	if err != nil {
		return err
	}
	pf, err := openParquetChecked(r.f, st.Size())
	if err != nil {
		return corruptf(r.path, "parquet: %v", err)
	}
	if d := diffColumns(ParquetColumns(pf.Schema()), columnTypes(l)); d != "" {
		return &FileError{Path: r.path, Err: fmt.Errorf("%w: %s: %s", ErrSchema, l.typ, d)}
	}
	var sum int64
	for _, rg := range pf.RowGroups() {
		sum += rg.NumRows()
		r.groupEnd = append(r.groupEnd, sum)
	}
	if sum != pf.NumRows() {
		return corruptf(r.path, "parquet: row groups hold %d rows, footer says %d", sum, pf.NumRows())
	}
	r.rows = pf.NumRows()
	// A decoded page or batch can be larger than the compressed file, but not by more than
	// zstd's ratio on this data; a damaged size field must not ask for more.
	alloc := &boundedAllocator{Allocator: memory.NewGoAllocator(), max: int(min(32*st.Size()+64<<20, 4<<30))}
	props := arrowpq.NewReaderProperties(alloc)
	// A section reader: arrow closes what it is given, and r.f is closed by Close.
	r.pf, err = file.NewParquetReader(io.NewSectionReader(r.f, 0, st.Size()), file.WithReadProps(props))
	if err != nil {
		return corruptf(r.path, "parquet: %v", err)
	}
	fr, err := pqarrow.NewFileReader(r.pf, pqarrow.ArrowReadProperties{BatchSize: parquetBatchRows}, alloc)
	if err != nil {
		return corruptf(r.path, "parquet: %v", err)
	}
	if r.rr, err = fr.GetRecordReader(context.Background(), nil, nil); err != nil {
		return corruptf(r.path, "parquet: %v", err)
	}
	r.pq = recordRows[T]{l: l, next: func() (arrow.RecordBatch, error) {
		if r.rec != nil {
			r.rec.Release()
			r.rec = nil
		}
		if !r.rr.Next() {
			if err := r.rr.Err(); err != nil && !errors.Is(err, io.EOF) {
				return nil, corruptf(r.path, "parquet: %s: %v", r.where(r.decoded), err)
			}
			return nil, io.EOF
		}
		r.rec = r.rr.RecordBatch()
		r.rec.Retain()
		if err := checkRecord(r.rec, l); err != nil {
			return nil, corruptf(r.path, "parquet: %s: %v", r.where(r.decoded), err)
		}
		r.decoded += r.rec.NumRows()
		return r.rec, nil
	}}
	return nil
}

// where names the row group holding row i (0-based, of the file), for errors: the batch
// that failed to decode starts there.
func (r *Reader[T]) where(i int64) string {
	for g, end := range r.groupEnd {
		if i < end {
			return fmt.Sprintf("row group %d of %d (rows from %d)", g, len(r.groupEnd), i)
		}
	}
	return fmt.Sprintf("rows from %d", i)
}

// NumRows is the row count the file's footer states, or -1 for Arrow files, whose footer
// does not state it.
func (r *Reader[T]) NumRows() int64 { return r.rows }

// Read fills rows from the start and returns how many it filled; io.EOF once the file holds
// no more. Rows are fresh values: they share no memory with the reader or each other.
func (r *Reader[T]) Read(rows []T) (n int, err error) {
	if r.ar != nil {
		return r.ar.read(rows)
	}
	defer func() {
		if p := recover(); p != nil {
			n, err = 0, corruptf(r.path, "parquet: %s: %v", r.where(r.read), p)
		}
	}()
	n, err = r.pq.read(rows)
	r.read += int64(n)
	if err != nil && !errors.Is(err, io.EOF) {
		return n, err
	}
	// A damaged page can end the rows early (or add some) without an error: the footer's
	// count is the check that nothing was lost.
	if r.read > r.rows || (errors.Is(err, io.EOF) && r.read != r.rows) {
		return n, corruptf(r.path, "parquet: %d rows read, the footer says %d", r.read, r.rows)
	}
	return n, err
}

// Close releases the file.
func (r *Reader[T]) Close() error {
	var err error
	if r.ar != nil {
		err = r.ar.close()
	}
	if r.rec != nil {
		r.rec.Release()
		r.rec = nil
	}
	if r.rr != nil {
		r.rr.Release()
	}
	if r.pf != nil {
		err = errors.Join(err, r.pf.Close())
	}
	return errors.Join(err, r.f.Close())
}

// ReadBatches calls fn with successive batches of at most batchSize rows of the shard at
// path, in file order, stopping at the first error fn returns. The batch slice is reused
// between calls; the rows in it are not.
func ReadBatches[T any](path string, batchSize int, fn func([]T) error) error {
	if batchSize <= 0 {
		batchSize = 256
	}
	r, err := OpenReader[T](path)
	if err != nil {
		return err
	}
	defer r.Close()
	buf := make([]T, batchSize)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if ferr := fn(buf[:n]); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// ReadRows calls fn with each row of the shard at path, in file order, stopping at the first
// error fn returns.
func ReadRows[T any](path string, fn func(T) error) error {
	return ReadBatches(path, 0, func(rows []T) error {
		for _, row := range rows {
			if err := fn(row); err != nil {
				return err
			}
		}
		return nil
	})
}

// ReadAll returns every row of the shard at path. For tests and small shards; a trainer
// streams with ReadBatches.
func ReadAll[T any](path string) ([]T, error) {
	var out []T
	err := ReadBatches(path, 0, func(rows []T) error {
		out = append(out, rows...)
		return nil
	})
	return out, err
}

func formatOfPath(path string) (Format, error) {
	switch filepath.Ext(path) {
	case ".parquet":
		return FormatParquet, nil
	case ".arrow":
		return FormatArrow, nil
	}
	return "", fmt.Errorf("%w: %q is neither .parquet nor .arrow", ErrFormat, filepath.Base(path))
}
