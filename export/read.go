package export

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/parquet-go/parquet-go"
)

// Reader reads the rows of one shard (.parquet or .arrow, by extension) as values of T, the
// row struct it was written from (kto.KTORow, kto.PackedRow, kto.SFTRow). It never panics on
// a damaged file: decoding failures are ErrCorrupt and a file whose columns are not T's is
// ErrSchema, both wrapped in a *FileError naming the file.
type Reader[T any] struct {
	path string
	f    *os.File
	pq   *parquet.GenericReader[T]
	rows int64 // the footer's row count (Parquet)
	read int64 // rows returned so far (Parquet)
	ar   *arrowReader[T]
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

// openParquet validates the file with parquet.OpenFile, which returns errors, before handing
// it to NewGenericReader, which panics on what it cannot read; a recover catches the rest.
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
	}
	if sum != pf.NumRows() {
		return corruptf(r.path, "parquet: row groups hold %d rows, footer says %d", sum, pf.NumRows())
	}
	r.pq = parquet.NewGenericReader[T](pf)
	r.rows = pf.NumRows()
	return nil
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
			n, err = 0, corruptf(r.path, "parquet: %v", p)
		}
	}()
	clear(rows) // parquet-go reuses slices it finds in rows; we promise fresh ones
	n, err = r.pq.Read(rows)
	r.read += int64(n)
	if err != nil && !errors.Is(err, io.EOF) {
		return n, corruptf(r.path, "parquet: %v", err)
	}
	// A damaged page can end the rows early (or add some) without an error from
	// parquet-go: the footer's count is the check that nothing was lost.
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
	if r.pq != nil {
		err = r.pq.Close()
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
