package pipeline

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/tokenize"
)

// spill holds tokenized examples on disk between the two passes of prep: pass one appends
// each example once, in input order; pass two fetches them by index in training order. Only
// the offsets stay in memory (8 bytes an example), so the data set's size is bounded by the
// disk, not by RAM. The file lives in the output directory under a temporary name and is
// removed at the end.
type spill struct {
	f    *os.File
	w    *bufio.Writer
	off  []int64 // start of example i; off[len] is the end (unless noIndex)
	size int64
	// count is the number of examples; noIndex: off is no longer kept (dropIndex).
	count   int
	noIndex bool
	buf     []byte
}

func newSpill(dir string) (*spill, error) {
	f, err := os.CreateTemp(dir, export.TempPattern("spill"))
	if err != nil {
		return nil, err
	}
	return &spill{f: f, w: bufio.NewWriterSize(f, 1<<20), off: []int64{0}}, nil
}

// Len is the number of examples appended.
func (s *spill) Len() int { return s.count }

func putU(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }

func putStr(b []byte, v string) []byte {
	b = putU(b, uint64(len(v)))
	return append(b, v...)
}

func putIDs(b []byte, ids []int32) []byte {
	b = putU(b, uint64(len(ids)))
	for _, id := range ids {
		b = binary.LittleEndian.AppendUint32(b, uint32(id))
	}
	return b
}

// putRuns appends marks as len+1 (0 for nil), the number of runs, then the run lengths,
// alternating false and true, starting with false: PromptAssistant is a few long runs, so
// this is a few bytes where one byte per token would be a tenth of the record.
func putRuns(b []byte, marks []bool) []byte {
	if marks == nil {
		return putU(b, 0)
	}
	b = putU(b, uint64(len(marks))+1)
	var runs []uint64
	cur, n := false, uint64(0)
	for _, m := range marks {
		if m != cur {
			runs = append(runs, n)
			cur, n = m, 0
		}
		n++
	}
	runs = append(runs, n)
	b = putU(b, uint64(len(runs)))
	for _, r := range runs {
		b = putU(b, r)
	}
	return b
}

// encodeExample appends the spill record of ex to b. Workers encode, so that the one
// goroutine that appends records only copies bytes.
func encodeExample(b []byte, ex *tokenize.Example) []byte { return encodeFields(b, ex, putStr) }

// encodeFields is the one layout of a record: it appends ex's fields to b in order, each
// text through str (putStr, or AppendExample's, which writes b and the text to the file
// instead and returns b emptied).
func encodeFields(b []byte, ex *tokenize.Example, str func(b []byte, v string) []byte) []byte {
	b = putIDs(b, ex.PromptIDs)
	b = putIDs(b, ex.CompletionIDs)
	b = putRuns(b, ex.PromptAssistant)
	b = str(b, ex.Prompt)
	b = str(b, ex.Completion)
	flags := byte(0)
	if ex.Label {
		flags |= 1
	}
	if ex.TextWithTools {
		flags |= 2
	}
	b = str(append(b, flags), ex.Behavior)
	b = str(b, ex.Source.File)
	b = putU(b, uint64(ex.Source.Line))
	b = putU(b, uint64(ex.RepairedIDs))
	return binary.LittleEndian.AppendUint64(b, ex.Group)
}

// bigRecord: a record at least this long is streamed to the spill (AppendExample) and read
// back field by field (GetAt), never built or read whole: a 50 MB prompt is then in memory
// once on each side, not two or three times.
const bigRecord = 1 << 20

// recordSize is an upper bound on the length of ex's record.
func recordSize(ex *tokenize.Example) int {
	return 4*(len(ex.PromptIDs)+len(ex.CompletionIDs)) + len(ex.Prompt) + len(ex.Completion) + len(ex.Source.File) + len(ex.Behavior) + 64
}

// Append writes one example and returns its index.
func (s *spill) Append(ex *tokenize.Example) (int, error) {
	if recordSize(ex) >= bigRecord {
		i, _, err := s.AppendExample(ex)
		return i, err
	}
	s.buf = encodeExample(s.buf[:0], ex)
	return s.AppendRecord(s.buf)
}

// AppendExample writes ex's record (the bytes encodeExample makes) straight into the file's
// buffer, texts without a copy, and returns its index and length.
func (s *spill) AppendExample(ex *tokenize.Example) (int, uint32, error) {
	n := 0
	var err error
	write := func(b []byte) {
		if err == nil {
			_, err = s.w.Write(b)
			n += len(b)
		}
	}
	str := func(b []byte, v string) []byte {
		write(putU(b, uint64(len(v))))
		if err == nil {
			_, err = s.w.WriteString(v)
			n += len(v)
		}
		return b[:0]
	}
	b := encodeFields(s.buf[:0], ex, str)
	write(b)
	s.buf = b[:0]
	if err != nil {
		return 0, 0, err
	}
	if n > math.MaxUint32 {
		return 0, 0, fmt.Errorf("spill: a record of %d bytes", n)
	}
	s.size += int64(n)
	s.count++
	if !s.noIndex {
		s.off = append(s.off, s.size)
	}
	return s.count - 1, uint32(n), nil
}

// AppendRecord writes one record made by encodeExample and returns its index.
func (s *spill) AppendRecord(rec []byte) (int, error) {
	if _, err := s.w.Write(rec); err != nil {
		return 0, err
	}
	s.size += int64(len(rec))
	s.count++
	if !s.noIndex {
		s.off = append(s.off, s.size)
	}
	return s.count - 1, nil
}

// locOf is where example i is, while the spill keeps its index.
func (s *spill) locOf(i int) loc { return loc{off: s.off[i], n: uint32(s.off[i+1] - s.off[i])} }

// dropIndex stops keeping offsets (8 bytes an example): a partitioned run keeps each
// example's location with its key on disk and reads it back with GetAt.
func (s *spill) dropIndex() { s.off, s.noIndex = nil, true }

// Finish flushes the writes so Get can read.
func (s *spill) Finish() error { return s.w.Flush() }

var errCorruptSpill = errors.New("spill file corrupt")

// Get reads example i back.
func (s *spill) Get(i int) (tokenize.Example, error) {
	ex, err := s.GetAt(s.off[i], uint32(s.off[i+1]-s.off[i]))
	if err != nil {
		return ex, fmt.Errorf("example %d: %w", i, err)
	}
	return ex, nil
}

// GetAt reads back the example whose record is n bytes at off.
func (s *spill) GetAt(off int64, n uint32) (tokenize.Example, error) {
	var d decoder
	if n >= bigRecord {
		// Field by field from the file: each text is read into its own string.
		d.r = bufio.NewReaderSize(io.NewSectionReader(s.f, off, int64(n)), 64<<10)
		d.left = int64(n)
	} else {
		if uint32(cap(s.buf)) < n {
			s.buf = make([]byte, n)
		}
		b := s.buf[:n]
		if _, err := s.f.ReadAt(b, off); err != nil && err != io.EOF {
			return tokenize.Example{}, err
		}
		d.b = b
	}
	var ex tokenize.Example
	ex.PromptIDs = d.ids()
	ex.CompletionIDs = d.ids()
	ex.PromptAssistant = d.runs()
	ex.Prompt = d.str()
	ex.Completion = d.str()
	flags := d.byte()
	ex.Label, ex.TextWithTools = flags&1 != 0, flags&2 != 0
	ex.Behavior = d.str()
	ex.Source.File = d.str()
	ex.Source.Line = int64(d.u())
	ex.RepairedIDs = int(d.u())
	if g := d.take(8); len(g) == 8 {
		ex.Group = binary.LittleEndian.Uint64(g)
	}
	if d.err != nil {
		return ex, fmt.Errorf("record at %d: %w", off, d.err)
	}
	return ex, nil
}

// Close removes the file.
func (s *spill) Close() error {
	name := s.f.Name()
	err := s.f.Close()
	if rerr := os.Remove(name); err == nil && !errors.Is(rerr, os.ErrNotExist) {
		err = rerr
	}
	return err
}

// decoder reads a record from b, or, for a big record, from r (left bytes of it remain).
type decoder struct {
	b    []byte
	r    *bufio.Reader
	left int64
	err  error
}

// remaining is how many bytes of the record are left.
func (d *decoder) remaining() uint64 {
	if d.r != nil {
		return uint64(d.left)
	}
	return uint64(len(d.b))
}

func (d *decoder) u() uint64 {
	if d.err != nil {
		return 0
	}
	if d.r != nil {
		v, err := binary.ReadUvarint(d)
		if err != nil {
			d.err = errCorruptSpill
			return 0
		}
		return v
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errCorruptSpill
		return 0
	}
	d.b = d.b[n:]
	return v
}

// ReadByte is the stream's, for binary.ReadUvarint.
func (d *decoder) ReadByte() (byte, error) {
	if d.left <= 0 {
		return 0, io.ErrUnexpectedEOF
	}
	c, err := d.r.ReadByte()
	d.left--
	return c, err
}

func (d *decoder) byte() byte {
	if b := d.take(1); len(b) == 1 {
		return b[0]
	}
	return 0
}

// take returns the next n bytes (valid until the next call), or nil and the error set.
func (d *decoder) take(n uint64) []byte {
	if d.err != nil || n > d.remaining() {
		d.err = errCorruptSpill
		return nil
	}
	if d.r != nil {
		b := make([]byte, n)
		if _, err := io.ReadFull(d.r, b); err != nil {
			d.err = errCorruptSpill
			return nil
		}
		d.left -= int64(n)
		return b
	}
	b := d.b[:n]
	d.b = d.b[n:]
	return b
}

func (d *decoder) str() string {
	n := d.u()
	if d.err != nil || n > d.remaining() {
		d.err = errCorruptSpill
		return ""
	}
	if d.r != nil {
		// Read into the string itself: no record buffer and no second copy.
		var sb strings.Builder
		sb.Grow(int(n))
		if _, err := io.CopyN(&sb, d.r, int64(n)); err != nil {
			d.err = errCorruptSpill
			return ""
		}
		d.left -= int64(n)
		return sb.String()
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

// runs reads what putRuns wrote.
func (d *decoder) runs() []bool {
	w := d.u()
	if w == 0 || d.err != nil {
		return nil
	}
	want := w - 1
	k := d.u()
	if d.err != nil || want > math.MaxInt32 || k > want+1 || k > d.remaining() {
		d.err = errCorruptSpill
		return nil
	}
	marks := make([]bool, 0, min(want, 1<<16))
	cur := false
	for ; k > 0 && d.err == nil; k-- {
		n := d.u()
		if n > want-uint64(len(marks)) {
			d.err = errCorruptSpill
			return nil
		}
		for ; n > 0; n-- {
			marks = append(marks, cur)
		}
		cur = !cur
	}
	if uint64(len(marks)) != want {
		d.err = errCorruptSpill
		return nil
	}
	return marks
}

func (d *decoder) ids() []int32 {
	n := d.u()
	if d.err != nil || n > math.MaxInt32 || 4*n > d.remaining() {
		d.err = errCorruptSpill
		return nil
	}
	b := d.take(4 * n)
	if d.err != nil {
		return nil
	}
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return ids
}
