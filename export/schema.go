package export

import (
	"fmt"
	"reflect"
	"strings"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/deprecated"
	"github.com/parquet-go/parquet-go/format"
)

// scalar is the element type of a column: a scalar column holds one, a list column many.
type scalar uint8

const (
	sInt32 scalar = iota + 1
	sInt64
	sBool
	sString
	sFloat32
	sFloat64
)

func (s scalar) String() string {
	switch s {
	case sInt32:
		return "int32"
	case sInt64:
		return "int64"
	case sBool:
		return "bool"
	case sString:
		return "string"
	case sFloat32:
		return "float32"
	case sFloat64:
		return "float64"
	}
	return "unknown"
}

func (s scalar) arrow() arrow.DataType {
	switch s {
	case sInt32:
		return arrow.PrimitiveTypes.Int32
	case sInt64:
		return arrow.PrimitiveTypes.Int64
	case sBool:
		return arrow.FixedWidthTypes.Boolean
	case sString:
		return arrow.BinaryTypes.String
	case sFloat32:
		return arrow.PrimitiveTypes.Float32
	case sFloat64:
		return arrow.PrimitiveTypes.Float64
	}
	return nil
}

func scalarOf(k reflect.Kind) scalar {
	switch k {
	case reflect.Int32:
		return sInt32
	case reflect.Int64:
		return sInt64
	case reflect.Bool:
		return sBool
	case reflect.String:
		return sString
	case reflect.Float32:
		return sFloat32
	case reflect.Float64:
		return sFloat64
	}
	return 0
}

// column is one field of a row struct as a shard column.
type column struct {
	name  string
	field int // index in the struct
	elem  scalar
	list  bool
}

// Type is the column type in the notation DESIGN.md uses: "int64", "list<int32>".
func (c column) Type() string {
	if c.list {
		return "list<" + c.elem.String() + ">"
	}
	return c.elem.String()
}

// layout is how a row struct maps onto columns. Both formats use it, so a Parquet shard and
// its Arrow twin have the same columns in the same order.
type layout struct {
	typ    reflect.Type
	cols   []column
	schema *arrow.Schema
}

var layouts sync.Map // reflect.Type → *layout or error

// layoutOf returns the column layout of row type T, built from the same `parquet:"name,…"`
// tags that parquet-go reads, so that both writers agree on names.
func layoutOf[T any]() (*layout, error) {
	t := reflect.TypeFor[T]()
	if v, ok := layouts.Load(t); ok {
		if err, isErr := v.(error); isErr {
			return nil, err
		}
		return v.(*layout), nil
	}
	l, err := buildLayout(t)
	if err != nil {
		layouts.Store(t, err)
		return nil, err
	}
	layouts.Store(t, l)
	return l, nil
}

func buildLayout(t reflect.Type) (*layout, error) {
	if t.Kind() != reflect.Struct {
		return nil, fmt.Errorf("%w: %s is not a struct", ErrRowType, t)
	}
	l := &layout{typ: t}
	var fields []arrow.Field
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name := f.Name
		if tag, ok := f.Tag.Lookup("parquet"); ok {
			n, _, _ := strings.Cut(tag, ",")
			if n == "-" {
				continue
			}
			if n != "" {
				name = n
			}
		}
		c := column{name: name, field: i}
		ft := f.Type
		if ft.Kind() == reflect.Slice {
			c.list = true
			ft = ft.Elem()
		}
		c.elem = scalarOf(ft.Kind())
		if c.elem == 0 || ft.Name() != ft.Kind().String() {
			// Named types (type Label bool) would survive Parquet but not every reader's
			// reflection; keep row structs to plain types.
			return nil, fmt.Errorf("%w: %s.%s has type %s", ErrRowType, t, f.Name, f.Type)
		}
		l.cols = append(l.cols, c)
		fields = append(fields, arrowField(c))
	}
	if len(l.cols) == 0 {
		return nil, fmt.Errorf("%w: %s has no exported fields", ErrRowType, t)
	}
	l.schema = arrow.NewSchema(fields, nil)
	return l, nil
}

// arrowField is the Arrow field of c: non-nullable, lists with a non-nullable "element",
// exactly as arrow's own Parquet reader (pqarrow) reads the Parquet shard that parquet-go
// writes, so a reader gets the same schema from either file.
func arrowField(c column) arrow.Field {
	t := c.elem.arrow()
	if c.list {
		t = arrow.ListOfField(arrow.Field{Name: "element", Type: t, Nullable: false})
	}
	return arrow.Field{Name: c.name, Type: t, Nullable: false}
}

// ColumnType is a column name and its type in DESIGN.md notation ("list<int32>").
type ColumnType struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// Columns returns the columns a shard of row type T has, in file order.
func Columns[T any]() ([]ColumnType, error) {
	l, err := layoutOf[T]()
	if err != nil {
		return nil, err
	}
	out := make([]ColumnType, len(l.cols))
	for i, c := range l.cols {
		out[i] = ColumnType{c.name, c.Type()}
	}
	return out, nil
}

// ParquetColumns describes the top-level columns of a Parquet schema in DESIGN.md notation.
// A type this package never writes is described as "unsupported(…)" so that a comparison
// names it.
func ParquetColumns(s *parquet.Schema) []ColumnType {
	fields := s.Fields()
	out := make([]ColumnType, len(fields))
	for i, f := range fields {
		out[i] = ColumnType{f.Name(), parquetType(f)}
	}
	return out
}

func parquetType(n parquet.Node) string {
	if n.Leaf() {
		if n.Repeated() {
			return "unsupported(repeated " + leafType(n) + ")"
		}
		return leafType(n)
	}
	if isList(n.Type()) {
		// The three-level LIST encoding: group (LIST) { repeated group list { element } }.
		if fs := n.Fields(); len(fs) == 1 && fs[0].Repeated() && !fs[0].Leaf() {
			if es := fs[0].Fields(); len(es) == 1 && es[0].Leaf() && !es[0].Repeated() {
				return "list<" + leafType(es[0]) + ">"
			}
		}
	}
	return "unsupported(group)"
}

// isList reports a LIST annotation, as a logical type or (older writers) a converted type.
func isList(t parquet.Type) bool {
	if lt := t.LogicalType(); lt != nil {
		_, ok := lt.Value.(*format.ListType)
		return ok
	}
	ct := t.ConvertedType()
	return ct != nil && *ct == deprecated.List
}

func leafType(n parquet.Node) string {
	t := n.Type()
	switch t.Kind() {
	case parquet.Boolean:
		return "bool"
	case parquet.Int32:
		if lt := t.LogicalType(); lt != nil {
			if it, ok := lt.Value.(*format.IntType); ok && (it.BitWidth != 32 || !it.IsSigned) {
				return fmt.Sprintf("unsupported(%s)", it)
			}
		}
		return "int32"
	case parquet.Int64:
		return "int64"
	case parquet.Float:
		return "float32"
	case parquet.Double:
		return "float64"
	case parquet.ByteArray:
		if lt := t.LogicalType(); lt != nil {
			if _, ok := lt.Value.(*format.StringType); ok {
				return "string"
			}
		} else if ct := t.ConvertedType(); ct != nil && *ct == deprecated.UTF8 {
			return "string"
		}
		return "unsupported(binary)"
	}
	return "unsupported(" + t.String() + ")"
}

// ArrowColumns describes the top-level fields of an Arrow schema in DESIGN.md notation.
func ArrowColumns(s *arrow.Schema) []ColumnType {
	out := make([]ColumnType, s.NumFields())
	for i, f := range s.Fields() {
		out[i] = ColumnType{f.Name, arrowType(f.Type)}
	}
	return out
}

func arrowType(t arrow.DataType) string {
	switch t.ID() {
	case arrow.INT32:
		return "int32"
	case arrow.INT64:
		return "int64"
	case arrow.BOOL:
		return "bool"
	case arrow.STRING:
		return "string"
	case arrow.FLOAT32:
		return "float32"
	case arrow.FLOAT64:
		return "float64"
	case arrow.LIST:
		return "list<" + arrowType(t.(*arrow.ListType).Elem()) + ">"
	}
	return "unsupported(" + t.String() + ")"
}

// diffColumns says how got differs from want ("" when equal, order included).
func diffColumns(got, want []ColumnType) string {
	var problems []string
	have := make(map[string]string, len(got))
	for _, c := range got {
		have[c.Name] = c.Type
	}
	wanted := make(map[string]bool, len(want))
	for _, c := range want {
		wanted[c.Name] = true
		t, ok := have[c.Name]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("missing column %s %s", c.Name, c.Type))
		case t != c.Type:
			problems = append(problems, fmt.Sprintf("column %s is %s, want %s", c.Name, t, c.Type))
		}
	}
	for _, c := range got {
		if !wanted[c.Name] {
			problems = append(problems, fmt.Sprintf("unexpected column %s %s", c.Name, c.Type))
		}
	}
	if len(problems) == 0 && len(got) == len(want) {
		for i := range got {
			if got[i].Name != want[i].Name {
				problems = append(problems, fmt.Sprintf("column %d is %s, want %s", i, got[i].Name, want[i].Name))
				break
			}
		}
	}
	return strings.Join(problems, "; ")
}
