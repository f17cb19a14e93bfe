package safetensors

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"unicode/utf8"
)

// MaxHeaderBytes is the largest header accepted, the Rust crate's MAX_HEADER_SIZE: a
// bigger one is refused before it is read.
const MaxHeaderBytes = 100_000_000

const metadataKey = "__metadata__"

// Info describes one tensor of a file. Offset is absolute within the file; Length is
// the tensor's size in bytes (the product of Shape times DType.Size()).
type Info struct {
	Name   string
	DType  DType
	Shape  []int
	Offset int64
	Length int64
}

// File is an open, fully validated safetensors file. Its tensors' data are views of a
// read-only mapping of the file, valid until Close; writing into them faults. Info, Tensors
// and Data may be called from several goroutines at once; Close may not overlap them.
type File struct {
	Path     string
	Metadata map[string]string // the header's __metadata__; nil when absent

	size      int64
	headerSum [32]byte
	tensors   []Info // by name
	byName    map[string]int
	data      []byte // the whole file; nil once closed
	release   func([]byte) error
}

// Open maps path and validates its header: the header length, the JSON, every dtype and
// shape, and that the tensors' offsets tile the data exactly (no overlap, no gap, each
// span the size its shape and dtype say, nothing after the last) and lie within the file.
// Nothing is allocated from a length or shape in the file before it has been checked
// against the file's size.
func Open(path string) (*File, error) {
	fail := func(sentinel error, detail string, args ...any) error {
		return &Error{File: path, Err: sentinel, Detail: fmt.Sprintf(detail, args...)}
	}
	fh, err := os.Open(path)
	if err != nil {
		return nil, &Error{File: path, Err: err}
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, &Error{File: path, Err: err}
	}
	if !st.Mode().IsRegular() {
		return nil, fail(ErrHeader, "not a regular file (%s)", st.Mode().Type())
	}
	size := st.Size()
	if size < 8 {
		return nil, fail(ErrHeader, "file is %d bytes, shorter than the 8-byte header length", size)
	}
	if size > math.MaxInt {
		return nil, fail(ErrHeader, "file is %d bytes, more than this platform can map", size)
	}
	var lenBuf [8]byte
	if _, err := fh.ReadAt(lenBuf[:], 0); err != nil {
		return nil, &Error{File: path, Err: err, Detail: "reading the header length"}
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	switch {
	case n > MaxHeaderBytes:
		return nil, fail(ErrHeader, "header length %d exceeds the limit of %d bytes", n, MaxHeaderBytes)
	case n > uint64(size-8):
		return nil, fail(ErrHeader, "header length %d but only %d bytes follow it", n, size-8)
	case n < 2:
		return nil, fail(ErrHeader, "header length %d is too short for a JSON object", n)
	}
	header := make([]byte, n)
	if _, err := fh.ReadAt(header, 8); err != nil {
		return nil, &Error{File: path, Err: err, Detail: "reading the header"}
	}
	dataStart := 8 + int64(n)
	meta, tensors, err := parseHeader(path, header, dataStart, size)
	if err != nil {
		return nil, err
	}
	data, release, err := mapFile(fh, size)
	if err != nil {
		return nil, &Error{File: path, Err: err, Detail: "mapping the file"}
	}
	f := &File{
		Path:      path,
		Metadata:  meta,
		size:      size,
		headerSum: sha256.Sum256(header),
		tensors:   tensors,
		byName:    make(map[string]int, len(tensors)),
		data:      data,
		release:   release,
	}
	for i, t := range tensors {
		f.byName[t.Name] = i
	}
	return f, nil
}

// Tensors lists the file's tensors sorted by name. The slice is the caller's; the Shapes
// are shared and must not be modified.
func (f *File) Tensors() []Info { return append([]Info(nil), f.tensors...) }

// Info returns the named tensor's description.
func (f *File) Info(name string) (Info, bool) {
	i, ok := f.byName[name]
	if !ok {
		return Info{}, false
	}
	return f.tensors[i], true
}

// Data returns the named tensor's bytes (little-endian, row-major), a view of the mapping
// valid until Close. Its capacity ends with the tensor, so appending copies.
func (f *File) Data(name string) ([]byte, error) {
	i, ok := f.byName[name]
	if !ok {
		return nil, &Error{File: f.Path, Tensor: name, Err: ErrNotFound}
	}
	if f.data == nil {
		return nil, &Error{File: f.Path, Tensor: name, Err: ErrClosed}
	}
	t := f.tensors[i]
	return f.data[t.Offset : t.Offset+t.Length : t.Offset+t.Length], nil
}

// Size is the file's size in bytes.
func (f *File) Size() int64 { return f.size }

// HeaderSHA256 is the SHA-256 of the header JSON (padding included). With the file's
// size it identifies the weights cheaply: the header holds every name, dtype, shape and
// offset, though not the values.
func (f *File) HeaderSHA256() [32]byte { return f.headerSum }

// Close unmaps the file. Data views obtained before must no longer be used.
func (f *File) Close() error {
	if f.data == nil {
		return nil
	}
	data := f.data
	f.data = nil
	if err := f.release(data); err != nil {
		return &Error{File: f.Path, Err: err, Detail: "unmapping"}
	}
	return nil
}

// parseHeader decodes and validates the header JSON of a file of fileSize bytes whose data
// begin at dataStart. It returns the tensors sorted by name with absolute offsets.
func parseHeader(path string, header []byte, dataStart, fileSize int64) (map[string]string, []Info, error) {
	fail := func(tensor string, sentinel error, detail string, args ...any) error {
		return &Error{File: path, Tensor: tensor, Err: sentinel, Detail: fmt.Sprintf(detail, args...)}
	}
	if !utf8.Valid(header) {
		return nil, nil, fail("", ErrHeader, "header is not valid UTF-8")
	}
	if header[0] != '{' {
		return nil, nil, fail("", ErrHeader, "header does not start with '{'")
	}
	dec := json.NewDecoder(bytes.NewReader(header))
	dec.UseNumber()
	jsonErr := func(tensor string, err error) error {
		return fail(tensor, ErrHeader, "bad JSON at byte %d: %v", dec.InputOffset(), err)
	}
	if _, err := dec.Token(); err != nil { // the '{' checked above
		return nil, nil, jsonErr("", err)
	}
	type span struct{ begin, end int64 }
	var (
		meta     map[string]string
		seenMeta bool
		tensors  []Info
		spans    []span
		seen     = map[string]bool{}
	)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, jsonErr("", err)
		}
		name, ok := tok.(string)
		if !ok {
			return nil, nil, fail("", ErrHeader, "expected a tensor name at byte %d", dec.InputOffset())
		}
		if name == metadataKey {
			if seenMeta {
				return nil, nil, fail("", ErrHeader, "duplicate %s", metadataKey)
			}
			seenMeta = true
			if meta, err = decodeMetadata(dec); err != nil {
				if isSyntax(err) {
					return nil, nil, jsonErr("", err)
				}
				return nil, nil, fail("", ErrHeader, "%s: %v", metadataKey, err)
			}
			continue
		}
		if seen[name] {
			return nil, nil, fail(name, ErrHeader, "duplicate tensor name")
		}
		seen[name] = true
		var raw map[string]any
		if err := decodeObject(dec, &raw); err != nil {
			if isSyntax(err) {
				return nil, nil, jsonErr(name, err)
			}
			return nil, nil, fail(name, ErrHeader, "%v", err)
		}
		info, sp, err := tensorInfo(raw)
		if err != nil {
			return nil, nil, fail(name, ErrHeader, "%v", err)
		}
		info.Name = name
		tensors = append(tensors, info)
		spans = append(spans, span{sp[0], sp[1]})
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, nil, jsonErr("", err)
	}
	if tok, err := dec.Token(); err != io.EOF {
		if err != nil {
			return nil, nil, jsonErr("", err)
		}
		return nil, nil, fail("", ErrHeader, "unexpected %v after the header object", tok)
	}

	// The spans must tile [0, dataLen) exactly, in offset order (the Rust crate's validate).
	order := make([]int, len(tensors))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool {
		sa, sb := spans[order[a]], spans[order[b]]
		if sa.begin != sb.begin {
			return sa.begin < sb.begin
		}
		if sa.end != sb.end {
			return sa.end < sb.end
		}
		return tensors[order[a]].Name < tensors[order[b]].Name
	})
	dataLen := fileSize - dataStart
	var end int64
	prev := ""
	for _, i := range order {
		s := spans[i]
		switch {
		case s.begin > end:
			return nil, nil, fail(tensors[i].Name, ErrHeader,
				"data_offsets [%d, %d] leave a gap: bytes %d..%d of the data belong to no tensor", s.begin, s.end, end, s.begin)
		case s.begin < end:
			return nil, nil, fail(tensors[i].Name, ErrHeader,
				"data_offsets [%d, %d] overlap tensor %q, which ends at %d", s.begin, s.end, prev, end)
		}
		end, prev = s.end, tensors[i].Name
	}
	for _, i := range order {
		if s := spans[i]; s.end > dataLen {
			return nil, nil, fail(tensors[i].Name, ErrTruncated,
				"data_offsets [%d, %d] end at file offset %d but the file is %d bytes", s.begin, s.end, dataStart+s.end, fileSize)
		}
	}
	if end < dataLen {
		return nil, nil, fail("", ErrHeader, "%d bytes after the last tensor belong to no tensor", dataLen-end)
	}
	for i := range tensors {
		tensors[i].Offset = dataStart + spans[i].begin
	}
	sort.Slice(tensors, func(a, b int) bool { return tensors[a].Name < tensors[b].Name })
	return meta, tensors, nil
}

// decodeObject decodes the next JSON value, which must be an object without duplicate
// keys, into *m.
func decodeObject(dec *json.Decoder, m *map[string]any) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("expected an object, found %v", tok)
	}
	*m = map[string]any{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, ok := tok.(string)
		if !ok {
			return fmt.Errorf("expected a key, found %v", tok)
		}
		if _, dup := (*m)[key]; dup {
			return fmt.Errorf("duplicate key %q", key)
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			return err
		}
		(*m)[key] = v
	}
	_, err = dec.Token()
	return err
}

// decodeMetadata decodes __metadata__: a string-to-string object, or null.
func decodeMetadata(dec *json.Decoder) (map[string]string, error) {
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return nil, err
	}
	if string(raw) == "null" {
		return nil, nil
	}
	sub := json.NewDecoder(bytes.NewReader(raw))
	sub.UseNumber()
	var m map[string]any
	if err := decodeObject(sub, &m); err != nil {
		return nil, err
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("value of %q is %s, not a string", k, jsonKind(v))
		}
		out[k] = s
	}
	return out, nil
}

// tensorInfo checks one tensor's dtype, shape and data_offsets. Unknown fields are refused:
// a field this reader does not understand might change what the bytes mean.
func tensorInfo(raw map[string]any) (Info, [2]int64, error) {
	var info Info
	var sp [2]int64
	for k := range raw {
		if k != "dtype" && k != "shape" && k != "data_offsets" {
			return info, sp, fmt.Errorf("unknown field %q", k)
		}
	}
	dt, ok := raw["dtype"].(string)
	if !ok {
		return info, sp, fmt.Errorf("dtype is %s, want a string", jsonKind(raw["dtype"]))
	}
	info.DType = DType(dt)
	if !info.DType.Known() {
		return info, sp, fmt.Errorf("unknown dtype %q", dt)
	}
	dims, err := naturals(raw["shape"], "shape")
	if err != nil {
		return info, sp, err
	}
	offs, err := naturals(raw["data_offsets"], "data_offsets")
	if err != nil {
		return info, sp, err
	}
	if len(offs) != 2 {
		return info, sp, fmt.Errorf("data_offsets has %d numbers, want 2", len(offs))
	}
	nbytes, err := byteSize(dims, info.DType)
	if err != nil {
		return info, sp, err
	}
	if offs[0] > offs[1] {
		return info, sp, fmt.Errorf("data_offsets [%d, %d] begin after they end", offs[0], offs[1])
	}
	if offs[1]-offs[0] != nbytes {
		return info, sp, fmt.Errorf("data_offsets [%d, %d] span %d bytes but shape %v of %s is %d bytes",
			offs[0], offs[1], offs[1]-offs[0], dims, dt, nbytes)
	}
	info.Shape = make([]int, len(dims))
	for i, d := range dims {
		info.Shape[i] = int(d) // byteSize bounded the product, hence each dim, by MaxInt
	}
	info.Length = nbytes
	return info, [2]int64{offs[0], offs[1]}, nil
}

// naturals reads a JSON array of non-negative integers that fit an int64.
func naturals(v any, field string) ([]int64, error) {
	arr, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%s is %s, want an array of integers", field, jsonKind(v))
	}
	out := make([]int64, len(arr))
	for i, e := range arr {
		num, ok := e.(json.Number)
		if !ok {
			return nil, fmt.Errorf("%s[%d] is %s, want an integer", field, i, jsonKind(e))
		}
		n, err := strconv.ParseInt(num.String(), 10, 64)
		if err != nil {
			if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
				return nil, fmt.Errorf("%s[%d] = %s overflows int64", field, i, num)
			}
			return nil, fmt.Errorf("%s[%d] = %s is not an integer", field, i, num)
		}
		if n < 0 {
			return nil, fmt.Errorf("%s[%d] = %d is negative", field, i, n)
		}
		out[i] = n
	}
	return out, nil
}

// byteSize is the product of dims times the dtype's size, refused when it overflows (in
// the order the Rust crate multiplies, so a zero dimension after an overflow still fails)
// or exceeds what this platform can address.
func byteSize[T int | int64](dims []T, dt DType) (int64, error) {
	limit := int64(math.MaxInt)
	n := int64(1)
	for _, d := range dims {
		d := int64(d)
		if d < 0 {
			return 0, fmt.Errorf("shape %v has a negative dimension", dims)
		}
		if d != 0 && n > limit/d {
			return 0, fmt.Errorf("shape %v: element count overflows", dims)
		}
		n *= d
	}
	size := int64(dt.Size())
	if n > limit/size {
		return 0, fmt.Errorf("shape %v of %s: byte size overflows", dims, dt)
	}
	return n * size, nil
}

// isSyntax tells a malformed JSON text from a well-formed one that breaks the schema.
func isSyntax(err error) bool {
	var se *json.SyntaxError
	return errors.As(err, &se) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}
