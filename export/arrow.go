package export

import (
	"fmt"
	"io"
	"reflect"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// arrowWriter writes rows of one layout to an Arrow IPC file, one record batch per
// batchRows rows. The body is not compressed: an .arrow shard is for memory-mapping
// (Hugging Face datasets, pyarrow.memory_map), which compressed buffers defeat; the
// Parquet twin is the compact copy.
type arrowWriter struct {
	l         *layout
	w         *ipc.FileWriter
	b         *array.RecordBuilder
	pending   int
	batchRows int
}

func newArrowWriter(out io.Writer, l *layout, batchRows int) (*arrowWriter, error) {
	mem := memory.NewGoAllocator()
	w, err := ipc.NewFileWriter(out, ipc.WithSchema(l.schema), ipc.WithAllocator(mem))
	if err != nil {
		return nil, err
	}
	return &arrowWriter{l: l, w: w, b: array.NewRecordBuilder(mem, l.schema), batchRows: batchRows}, nil
}

// append adds one row (a struct value of the layout's type).
func (a *arrowWriter) append(v reflect.Value) error {
	for i, c := range a.l.cols {
		f := v.Field(c.field)
		fb := a.b.Field(i)
		if c.list {
			lb := fb.(*array.ListBuilder)
			lb.Append(true)
			appendValues(lb.ValueBuilder(), c.elem, f)
		} else {
			appendScalar(fb, c.elem, f)
		}
	}
	a.pending++
	if a.pending >= a.batchRows {
		return a.flush()
	}
	return nil
}

func appendValues(b array.Builder, s scalar, f reflect.Value) {
	switch s {
	case sInt32:
		b.(*array.Int32Builder).AppendValues(f.Interface().([]int32), nil)
	case sInt64:
		b.(*array.Int64Builder).AppendValues(f.Interface().([]int64), nil)
	case sBool:
		b.(*array.BooleanBuilder).AppendValues(f.Interface().([]bool), nil)
	case sString:
		b.(*array.StringBuilder).AppendValues(f.Interface().([]string), nil)
	case sFloat32:
		b.(*array.Float32Builder).AppendValues(f.Interface().([]float32), nil)
	case sFloat64:
		b.(*array.Float64Builder).AppendValues(f.Interface().([]float64), nil)
	}
}

func appendScalar(b array.Builder, s scalar, f reflect.Value) {
	switch s {
	case sInt32:
		b.(*array.Int32Builder).Append(int32(f.Int()))
	case sInt64:
		b.(*array.Int64Builder).Append(f.Int())
	case sBool:
		b.(*array.BooleanBuilder).Append(f.Bool())
	case sString:
		b.(*array.StringBuilder).Append(f.String())
	case sFloat32:
		b.(*array.Float32Builder).Append(float32(f.Float()))
	case sFloat64:
		b.(*array.Float64Builder).Append(f.Float())
	}
}

func (a *arrowWriter) flush() error {
	if a.pending == 0 {
		return nil
	}
	rec := a.b.NewRecordBatch()
	defer rec.Release()
	a.pending = 0
	return a.w.Write(rec)
}

// close writes what is pending and the file footer. A shard with no rows still gets its
// schema, so every listed file can be opened.
func (a *arrowWriter) close() error {
	defer a.b.Release()
	if err := a.flush(); err != nil {
		return err
	}
	return a.w.Close()
}

// arrowReader reads rows of type T from an Arrow IPC file, one record batch at a time.
type arrowReader[T any] struct {
	path string
	r    *ipc.FileReader
	next int // next record batch
	rows recordRows[T]
}

// recordRows turns a sequence of checked record batches (checkRecord) into rows of T: the
// Arrow IPC reader's and the Parquet reader's (pqarrow) common part.
type recordRows[T any] struct {
	l    *layout
	next func() (arrow.RecordBatch, error) // the next batch, or io.EOF after the last
	rec  arrow.RecordBatch
	row  int // next row of rec
}

// read fills rows from the start and returns how many it filled; io.EOF once no batch is
// left.
func (rr *recordRows[T]) read(rows []T) (n int, err error) {
	for n < len(rows) {
		if rr.rec == nil || rr.row >= int(rr.rec.NumRows()) {
			if rr.rec, err = rr.next(); err != nil {
				rr.rec = nil
				return n, err
			}
			rr.row = 0
			continue
		}
		v := reflect.ValueOf(&rows[n]).Elem()
		v.SetZero()
		for i, c := range rr.l.cols {
			setField(v.Field(c.field), rr.rec.Column(i), c, rr.row)
		}
		rr.row++
		n++
	}
	return n, nil
}

func openArrow[T any](path string, ra ipc.ReadAtSeeker, l *layout) (ar *arrowReader[T], err error) {
	defer func() {
		if p := recover(); p != nil {
			ar, err = nil, corruptf(path, "arrow: %v", p)
		}
	}()
	size, err := ra.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, err
	}
	if _, err := ra.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	r, err := newArrowFileReader(ra, size)
	if err != nil {
		return nil, corruptf(path, "arrow: %v", err)
	}
	if d := diffColumns(ArrowColumns(r.Schema()), columnTypes(l)); d != "" {
		r.Close()
		return nil, &FileError{Path: path, Err: fmt.Errorf("%w: %s: %s", ErrSchema, l.typ, d)}
	}
	ar = &arrowReader[T]{path: path, r: r}
	ar.rows = recordRows[T]{l: l, next: func() (arrow.RecordBatch, error) {
		if ar.next >= ar.r.NumRecords() {
			return nil, io.EOF
		}
		rec, err := ar.r.RecordBatch(ar.next)
		if err != nil {
			return nil, corruptf(path, "arrow record batch %d: %v", ar.next, err)
		}
		ar.next++
		if err := checkRecord(rec, l); err != nil {
			return nil, corruptf(path, "arrow record batch %d: %v", ar.next-1, err)
		}
		return rec, nil
	}}
	return ar, nil
}

func columnTypes(l *layout) []ColumnType {
	out := make([]ColumnType, len(l.cols))
	for i, c := range l.cols {
		out[i] = ColumnType{c.name, c.Type()}
	}
	return out
}

func (ar *arrowReader[T]) read(rows []T) (n int, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = corruptf(ar.path, "arrow record batch %d: %v", ar.next-1, p)
		}
	}()
	return ar.rows.read(rows)
}

// checkRecord validates what setField relies on, so that a corrupted offset buffer is an
// error rather than an out-of-range slice.
func checkRecord(rec arrow.RecordBatch, l *layout) error {
	if int(rec.NumCols()) != len(l.cols) {
		return fmt.Errorf("%d columns, want %d", rec.NumCols(), len(l.cols))
	}
	n := rec.NumRows()
	for i, c := range l.cols {
		col := rec.Column(i)
		if int64(col.Len()) != n {
			return fmt.Errorf("column %s has %d values for %d rows", c.name, col.Len(), n)
		}
		if col.NullN() != 0 {
			return fmt.Errorf("column %s has %d nulls", c.name, col.NullN())
		}
		if c.list {
			lst := col.(*array.List)
			vals := int64(lst.ListValues().Len())
			prev := int64(0)
			for r := 0; r < lst.Len(); r++ {
				s, e := lst.ValueOffsets(r)
				if s < prev || e < s || e > vals {
					return fmt.Errorf("column %s row %d: offsets [%d, %d) outside [%d, %d]", c.name, r, s, e, prev, vals)
				}
				prev = e
			}
			if lst.ListValues().NullN() != 0 {
				return fmt.Errorf("column %s has null elements", c.name)
			}
		}
	}
	return nil
}

func setField(f reflect.Value, col arrow.Array, c column, row int) {
	if !c.list {
		switch c.elem {
		case sInt32:
			f.SetInt(int64(col.(*array.Int32).Value(row)))
		case sInt64:
			f.SetInt(col.(*array.Int64).Value(row))
		case sBool:
			f.SetBool(col.(*array.Boolean).Value(row))
		case sString:
			// Value aliases arrow's buffer, which a reader may reuse: rows get their own copy.
			f.SetString(strings.Clone(col.(*array.String).Value(row)))
		case sFloat32:
			f.SetFloat(float64(col.(*array.Float32).Value(row)))
		case sFloat64:
			f.SetFloat(col.(*array.Float64).Value(row))
		}
		return
	}
	lst := col.(*array.List)
	s, e := lst.ValueOffsets(row)
	vals := lst.ListValues()
	switch c.elem {
	case sInt32:
		f.Set(reflect.ValueOf(append([]int32{}, vals.(*array.Int32).Int32Values()[s:e]...)))
	case sInt64:
		f.Set(reflect.ValueOf(append([]int64{}, vals.(*array.Int64).Int64Values()[s:e]...)))
	case sFloat32:
		f.Set(reflect.ValueOf(append([]float32{}, vals.(*array.Float32).Float32Values()[s:e]...)))
	case sFloat64:
		f.Set(reflect.ValueOf(append([]float64{}, vals.(*array.Float64).Float64Values()[s:e]...)))
	case sBool:
		b := vals.(*array.Boolean)
		out := make([]bool, e-s)
		for i := range out {
			out[i] = b.Value(int(s) + i)
		}
		f.Set(reflect.ValueOf(out))
	case sString:
		str := vals.(*array.String)
		out := make([]string, e-s)
		for i := range out {
			out[i] = strings.Clone(str.Value(int(s) + i))
		}
		f.Set(reflect.ValueOf(out))
	}
}

func (ar *arrowReader[T]) close() error {
	ar.rows.rec = nil
	return ar.r.Close()
}
