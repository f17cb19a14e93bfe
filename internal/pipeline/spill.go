package pipeline

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"

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
func encodeExample(b []byte, ex *tokenize.Example) []byte {
	b = putIDs(b, ex.PromptIDs)
	b = putIDs(b, ex.CompletionIDs)
	b = putRuns(b, ex.PromptAssistant)
	b = putStr(b, ex.Prompt)
	b = putStr(b, ex.Completion)
	flags := byte(0)
	if ex.Label {
		flags |= 1
	}
	if ex.TextWithTools {
		flags |= 2
	}
	b = append(b, flags)
	b = putStr(b, ex.Behavior)
	b = putStr(b, ex.Source)
	b = putU(b, uint64(ex.RepairedIDs))
	b = binary.LittleEndian.AppendUint64(b, ex.Group)
	return b
}

// Append writes one example and returns its index.
func (s *spill) Append(ex *tokenize.Example) (int, error) {
	s.buf = encodeExample(s.buf[:0], ex)
	return s.AppendRecord(s.buf)
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
	if uint32(cap(s.buf)) < n {
		s.buf = make([]byte, n)
	}
	b := s.buf[:n]
	if _, err := s.f.ReadAt(b, off); err != nil && err != io.EOF {
		return tokenize.Example{}, err
	}
	d := decoder{b: b}
	var ex tokenize.Example
	ex.PromptIDs = d.ids()
	ex.CompletionIDs = d.ids()
	ex.PromptAssistant = d.runs()
	ex.Prompt = d.str()
	ex.Completion = d.str()
	flags := d.byte()
	ex.Label, ex.TextWithTools = flags&1 != 0, flags&2 != 0
	ex.Behavior = d.str()
	ex.Source = d.str()
	ex.RepairedIDs = int(d.u())
	if len(d.b) >= 8 {
		ex.Group = binary.LittleEndian.Uint64(d.b)
	} else {
		d.err = errCorruptSpill
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

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) u() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errCorruptSpill
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if len(d.b) == 0 {
		d.err = errCorruptSpill
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) str() string {
	n := d.u()
	if d.err != nil || n > uint64(len(d.b)) {
		d.err = errCorruptSpill
		return ""
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
	if d.err != nil || want > math.MaxInt32 || k > want+1 || k > uint64(len(d.b)) {
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
	if d.err != nil || n > math.MaxInt32 || 4*n > uint64(len(d.b)) {
		d.err = errCorruptSpill
		return nil
	}
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32(binary.LittleEndian.Uint32(d.b[4*i:]))
	}
	d.b = d.b[4*n:]
	return ids
}
