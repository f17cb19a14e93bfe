package loader

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// Reader streams rows from one input. Read returns each row, or a *RowError for a bad row
// after which reading goes on, or a stream error (a broken gzip, an unreadable file) that
// sticks, or io.EOF at the end. Memory is bounded by Config.MaxLineBytes, never by the input.
type Reader struct {
	cfg  Config
	name string
	next func() ([]byte, int64, error) // the next raw record with its line number
	lr   *lineReader                   // JSONL: next's buffer, which ReadOwnedRecord may take
	clos []io.Closer
	err  error // sticky stream error

	// Blank counts whitespace-only lines, which are not rows and so not counted as read.
	Blank int64

	hash *countingHash // raw input bytes as read, for the manifest's sha256
}

// countingHash hashes and counts the raw bytes of an input as the reader consumes them, so
// the manifest can name the exact input without reading it twice (stdin cannot be).
type countingHash struct {
	h hash.Hash
	n int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.h.Write(p)
}

// Digest returns the sha256 (hex) and size of the raw input bytes read so far: the whole
// input once Read has returned io.EOF.
func (r *Reader) Digest() (sha string, size int64) {
	if r.hash == nil {
		return "", 0
	}
	return hex.EncodeToString(r.hash.h.Sum(nil)), r.hash.n
}

// Open opens path for reading: "-" is stdin; .gz and .zst are decompressed; .parquet is read
// as a Hugging Face style Parquet file (conversations as a list of structs); anything else is
// JSONL. name is how the input is named in errors, rejects and the manifest.
func Open(path string, cfg Config) (*Reader, error) {
	if path == "-" {
		return NewReader(os.Stdin, "-", cfg)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return nil, fmt.Errorf("%s: is a directory, not a data file", path)
	}
	if strings.HasSuffix(strings.ToLower(path), ".parquet") {
		return openParquet(path, cfg)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	r, err := NewReader(f, path, cfg)
	if err != nil {
		f.Close()
		return nil, err
	}
	r.clos = append(r.clos, f)
	return r, nil
}

// NewReader reads JSONL from r, transparently decompressing gzip or zstd (detected by their
// magic bytes, so a compressed stdin works too).
func NewReader(r io.Reader, name string, cfg Config) (*Reader, error) {
	ch := &countingHash{h: sha256.New()}
	br := bufio.NewReaderSize(io.TeeReader(r, ch), 256<<10)
	rd := &Reader{cfg: cfg, name: name, hash: ch}
	magic, _ := br.Peek(4)
	var src io.Reader = br
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		rd.clos = append(rd.clos, zr)
		src = zr
	case len(magic) == 4 && bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(1<<27))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		rd.clos = append(rd.clos, zr.IOReadCloser())
		src = zr
	}
	if src != io.Reader(br) {
		src = bufio.NewReaderSize(src, 256<<10)
	}
	lr := &lineReader{br: src.(*bufio.Reader), max: cfg.maxLine()}
	rd.next, rd.lr = lr.next, lr
	return rd, nil
}

// Name is the input's name as given.
func (r *Reader) Name() string { return r.name }

// Read returns the next row: ReadRecord, then ParseRow (a bad row is a *RowError). See Reader.
func (r *Reader) Read() (Row, error) {
	data, line, err := r.ReadRecord()
	if err != nil {
		return Row{}, err
	}
	return ParseRow(data, r.name, line, r.cfg)
}

// ReadRecord returns the next record (a JSONL line, or a Parquet row as JSON) with its line
// number, without parsing it, so that a caller can run ParseRow on several goroutines: Read
// is ReadRecord followed by ParseRow(data, r.Name(), line, cfg). Blank lines are skipped
// (and counted in Blank); an over-long line comes back as a *RowError, as from Read, and
// stream errors stick. data is only valid until the next call.
func (r *Reader) ReadRecord() (data []byte, line int64, err error) {
	if r.err != nil {
		return nil, 0, r.err
	}
	for {
		data, line, err := r.next()
		if err != nil {
			var tl *tooLong
			if errors.As(err, &tl) {
				return nil, line, &RowError{Source: Source{File: r.name, Line: line}, Err: ErrLineTooLong,
					Detail: fmt.Sprintf("line is longer than --max-line-bytes=%d (%d bytes or more)", r.cfg.maxLine(), tl.n),
					Raw:    tl.prefix}
			}
			if err != io.EOF {
				err = fmt.Errorf("%s: line %d: %w", r.name, line, err)
			}
			r.err = err
			return nil, line, err
		}
		if len(bytes.TrimSpace(data)) == 0 {
			r.Blank++
			continue
		}
		return data, line, nil
	}
}

// handOverBytes: ReadOwnedRecord gives a record at least this long away with the reader's
// buffer instead of copying it, so a huge line is in memory once, not twice.
const handOverBytes = 1 << 20

// ReadOwnedRecord is ReadRecord, except that data is the caller's to keep: a short record is
// copied, a long one (handOverBytes or more) is handed over with the buffer it was read
// into, and the reader starts a new one. Parquet records are fresh already.
func (r *Reader) ReadOwnedRecord() (data []byte, line int64, err error) {
	data, line, err = r.ReadRecord()
	if err != nil || r.lr == nil {
		return data, line, err
	}
	if len(data) >= handOverBytes {
		r.lr.buf = nil
		return data, line, nil
	}
	return append([]byte(nil), data...), line, nil
}

// Close releases the input.
func (r *Reader) Close() error {
	var first error
	for i := len(r.clos) - 1; i >= 0; i-- {
		if err := r.clos[i].Close(); err != nil && first == nil {
			first = err
		}
	}
	r.clos = nil
	return first
}

type tooLong struct {
	n      int
	prefix []byte
}

func (t *tooLong) Error() string { return "line too long" }

// lineReader splits a stream into lines with a hard limit, using bufio.Reader.ReadSlice so a
// long line costs at most max bytes of memory (bufio.Scanner would stop for good at 64 KiB).
type lineReader struct {
	br   *bufio.Reader
	max  int
	line int64
	buf  []byte
}

// rawPrefix is how much of an over-long line is kept for the rejects file.
const rawPrefix = 4096

// keepBufBytes: a line buffer grown past this for one long line is dropped at the next
// line, rather than kept (up to --max-line-bytes) for the rest of the input.
const keepBufBytes = 1 << 20

func (l *lineReader) next() ([]byte, int64, error) {
	if cap(l.buf) > keepBufBytes {
		l.buf = nil
	}
	l.buf = l.buf[:0]
	l.line++
	over := false
	total := 0
	var prefix []byte
	for {
		frag, err := l.br.ReadSlice('\n')
		total += len(frag)
		if !over {
			if len(l.buf)+len(frag) > l.max+2 { // +2: the line ending is not content
				over = true
				prefix = append([]byte(nil), l.buf[:min(len(l.buf), rawPrefix)]...)
				if len(prefix) < rawPrefix {
					prefix = append(prefix, frag[:min(len(frag), rawPrefix-len(prefix))]...)
				}
				l.buf = l.buf[:0]
			} else {
				l.buf = l.grow(l.buf, len(frag))
				l.buf = append(l.buf, frag...)
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF && total == 0 {
			return nil, l.line, io.EOF
		}
		if err != nil && err != io.EOF {
			return nil, l.line, err
		}
		break
	}
	if over {
		return nil, l.line, &tooLong{n: total, prefix: prefix}
	}
	b := l.buf
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if l.line == 1 {
		b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf")) // a UTF-8 BOM is not content
	}
	if len(b) > l.max {
		return nil, l.line, &tooLong{n: len(b), prefix: append([]byte(nil), b[:min(len(b), rawPrefix)]...)}
	}
	return b, l.line, nil
}

// grow makes room for n more bytes in b, doubling its capacity (never past the line limit):
// append grows a large slice by a quarter at a time, which for a 50 MB line leaves some
// 200 MB of discarded buffers for the collector, and --memory-limit lets them pile up.
func (l *lineReader) grow(b []byte, n int) []byte {
	if len(b)+n <= cap(b) {
		return b
	}
	c := max(2*cap(b), len(b)+n, 4096)
	c = min(c, max(l.max+2, len(b)+n))
	nb := make([]byte, len(b), c)
	copy(nb, b)
	return nb
}
