package export

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/parquet-go/parquet-go"
)

// The Parquet and Arrow readers trust the lengths they find in a file. parquet-go's OpenFile
// allocates the footer length that the last 8 bytes state; arrow's IPC reader allocates as
// many fields as a schema's (damaged) field or children count says (one flipped byte asked
// for 160 GiB), and the size a buffer marked compressed claims. The Go runtime cannot
// recover from running out of memory, so recover() is no guard against these: the checks
// below run first, and arrow gets an allocator that refuses anything larger than the file.

// openParquetChecked is parquet.OpenFile after checking that the footer length fits the file.
func openParquetChecked(r io.ReaderAt, size int64) (*parquet.File, error) {
	if size < 12 {
		return nil, fmt.Errorf("parquet: file of %d bytes is too small", size)
	}
	var tail [8]byte
	if _, err := r.ReadAt(tail[:], size-8); err != nil {
		return nil, err
	}
	if n := int64(binary.LittleEndian.Uint32(tail[:4])); n > size-12 {
		return nil, fmt.Errorf("parquet: footer length %d does not fit a %d-byte file", n, size)
	}
	return parquet.OpenFile(r, size)
}

// errArrowLayout: the footer is not what an Arrow IPC file of ktoloader's shape holds.
var errArrowLayout = errors.New("arrow footer")

// newArrowFileReader opens an Arrow IPC file of size bytes after checkArrowFooter, with
// allocations bounded by the file size. Arrow may still panic on a damaged record batch
// (an out-of-range slice); callers recover.
func newArrowFileReader(r ipc.ReadAtSeeker, size int64) (*ipc.FileReader, error) {
	if err := checkArrowFooter(r, size); err != nil {
		return nil, err
	}
	return ipc.NewFileReader(r, ipc.WithAllocator(&boundedAllocator{
		Allocator: memory.NewGoAllocator(), max: int(min(size, 1<<40)) + 64<<10,
	}))
}

// boundedAllocator refuses (panics on) allocations larger than max: an uncompressed file's
// buffers are slices of its body, so nothing legitimate is larger than the file.
type boundedAllocator struct {
	memory.Allocator
	max int
}

func (a *boundedAllocator) Allocate(n int) []byte {
	a.check(n)
	return a.Allocator.Allocate(n)
}

func (a *boundedAllocator) Reallocate(n int, b []byte) []byte {
	a.check(n)
	return a.Allocator.Reallocate(n, b)
}

func (a *boundedAllocator) check(n int) {
	if n < 0 || n > a.max {
		panic(fmt.Sprintf("arrow asked for %d bytes, more than the file holds", n))
	}
}

// arrowMaxDepth bounds field nesting: ktoloader writes at most list<scalar> (depth 2).
const arrowMaxDepth = 8

// checkArrowFooter reads the footer of the Arrow IPC file (…, footer flatbuffer, int32
// footer length, "ARROW1") and checks, with bounds-checked reads of its own, that every
// vector the reader will size an allocation by fits inside the footer, that no dictionary
// is used, and that each field's type is one ktoloader writes (null, int, float, binary,
// utf8, bool, list), whose type tables hold no vectors.
func checkArrowFooter(r io.ReaderAt, size int64) error {
	const magic = "ARROW1"
	if size < int64(8+4+len(magic)) {
		return fmt.Errorf("%w: file of %d bytes is too small", errArrowLayout, size)
	}
	tail := make([]byte, 4+len(magic))
	if _, err := r.ReadAt(tail, size-int64(len(tail))); err != nil {
		return err
	}
	if string(tail[4:]) != magic {
		return fmt.Errorf("%w: no ARROW1 magic at the end", errArrowLayout)
	}
	n := int64(binary.LittleEndian.Uint32(tail))
	if n < 8 || n > size-int64(len(tail))-8 {
		return fmt.Errorf("%w: length %d does not fit a %d-byte file", errArrowLayout, n, size)
	}
	b := make(fbuf, n)
	if _, err := r.ReadAt(b, size-int64(len(tail))-n); err != nil {
		return err
	}
	if err := b.checkFooter(); err != nil {
		return fmt.Errorf("%w: %v", errArrowLayout, err)
	}
	return nil
}

// fbuf is a flatbuffer read with every offset checked, enough to walk Arrow's Footer,
// Schema, Field and KeyValue tables (format/File.fbs, format/Schema.fbs).
type fbuf []byte

var errFBBounds = errors.New("offset outside the flatbuffer")

func (b fbuf) u32(p int) (int, error) {
	if p < 0 || p > len(b)-4 {
		return 0, errFBBounds
	}
	return int(binary.LittleEndian.Uint32(b[p:])), nil
}

func (b fbuf) u16(p int) (int, error) {
	if p < 0 || p > len(b)-2 {
		return 0, errFBBounds
	}
	return int(binary.LittleEndian.Uint16(b[p:])), nil
}

// slot returns the position of field slot of the table at tab, 0 when absent.
func (b fbuf) slot(tab, slot int) (int, error) {
	so, err := b.u32(tab)
	if err != nil {
		return 0, err
	}
	vt := tab - int(int32(uint32(so)))
	vsize, err := b.u16(vt)
	if err != nil {
		return 0, err
	}
	tsize, err := b.u16(vt + 2)
	if err != nil {
		return 0, err
	}
	o := 4 + 2*slot
	if o+2 > vsize {
		return 0, nil
	}
	off, err := b.u16(vt + o)
	if err != nil || off == 0 {
		return 0, err
	}
	if off >= tsize || tab+off >= len(b) {
		return 0, errFBBounds
	}
	return tab + off, nil
}

// indirect follows the unsigned offset stored at p.
func (b fbuf) indirect(p int) (int, error) {
	o, err := b.u32(p)
	if err != nil {
		return 0, err
	}
	if q := p + o; q < len(b) {
		return q, nil
	}
	return 0, errFBBounds
}

// vector returns the start and length of the vector in slot of tab, after checking that n
// elements of elem bytes fit in the buffer. An absent vector is empty.
func (b fbuf) vector(tab, slot, elem int) (start, n int, err error) {
	p, err := b.slot(tab, slot)
	if err != nil || p == 0 {
		return 0, 0, err
	}
	v, err := b.indirect(p)
	if err != nil {
		return 0, 0, err
	}
	if n, err = b.u32(v); err != nil {
		return 0, 0, err
	}
	start = v + 4
	if n > (len(b)-start)/elem {
		return 0, 0, fmt.Errorf("a vector of %d elements does not fit in %d bytes", n, len(b))
	}
	return start, n, nil
}

// table returns the position of the table the vector element at p points to.
func (b fbuf) table(p int) (int, error) { return b.indirect(p) }

func (b fbuf) checkFooter() error {
	root, err := b.indirect(0)
	if err != nil {
		return err
	}
	// Footer: version 0, schema 1, dictionaries 2 and recordBatches 3 ([Block], 24-byte
	// structs), custom_metadata 4.
	if _, n, err := b.vector(root, 2, 24); err != nil || n != 0 {
		return errors.Join(err, errorIf(n != 0, "dictionary batches, which ktoloader never writes"))
	}
	if _, _, err := b.vector(root, 3, 24); err != nil {
		return err
	}
	if err := b.keyValues(root, 4); err != nil {
		return err
	}
	sp, err := b.slot(root, 1)
	if err != nil || sp == 0 {
		return errors.Join(err, errorIf(sp == 0, "no schema"))
	}
	schema, err := b.table(sp)
	if err != nil {
		return err
	}
	// Schema: endianness 0, fields 1, custom_metadata 2, features 3 ([long]).
	if err := b.keyValues(schema, 2); err != nil {
		return err
	}
	if _, _, err := b.vector(schema, 3, 8); err != nil {
		return err
	}
	return b.fields(schema, 1, 0)
}

func errorIf(cond bool, what string) error {
	if cond {
		return errors.New(what)
	}
	return nil
}

// Arrow Type union tags (Schema.fbs) whose tables hold only scalars.
var arrowSimpleTypes = map[int]bool{1: true /* Null */, 2: true /* Int */, 3: true /* FloatingPoint */, 4: true, /* Binary */
	5: true /* Utf8 */, 6: true /* Bool */, 12: true /* List */}

// fields checks the [Field] vector in slot of tab. Field: name 0, nullable 1, type_type 2,
// type 3, dictionary 4, children 5 ([Field]), custom_metadata 6.
func (b fbuf) fields(tab, slot, depth int) error {
	if depth > arrowMaxDepth {
		return fmt.Errorf("fields nested deeper than %d", arrowMaxDepth)
	}
	start, n, err := b.vector(tab, slot, 4)
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		f, err := b.table(start + 4*i)
		if err != nil {
			return err
		}
		if err := b.str(f, 0); err != nil {
			return err
		}
		tp, err := b.slot(f, 2)
		if err != nil {
			return err
		}
		tag := 0
		if tp != 0 {
			tag = int(b[tp])
		}
		if !arrowSimpleTypes[tag] {
			return fmt.Errorf("field %d has type tag %d, not one ktoloader writes", i, tag)
		}
		if d, err := b.slot(f, 4); err != nil || d != 0 {
			return errors.Join(err, errorIf(d != 0, "a dictionary-encoded field"))
		}
		if err := b.fields(f, 5, depth+1); err != nil {
			return err
		}
		if err := b.keyValues(f, 6); err != nil {
			return err
		}
	}
	return nil
}

// keyValues checks a [KeyValue] vector (key 0, value 1: strings).
func (b fbuf) keyValues(tab, slot int) error {
	start, n, err := b.vector(tab, slot, 4)
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		kv, err := b.table(start + 4*i)
		if err != nil {
			return err
		}
		if err := b.str(kv, 0); err != nil {
			return err
		}
		if err := b.str(kv, 1); err != nil {
			return err
		}
	}
	return nil
}

// str checks that the string in slot of tab lies inside the buffer.
func (b fbuf) str(tab, slot int) error {
	_, _, err := b.vector(tab, slot, 1)
	return err
}
