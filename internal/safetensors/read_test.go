package safetensors

import (
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// rawFile is a safetensors file built by hand: the 8-byte little-endian header length,
// the header as given (no padding added), then data.
func rawFile(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, data...)
}

// withLength is a file whose header-length field says n whatever follows.
func withLength(n uint64, rest string) []byte {
	return append(binary.LittleEndian.AppendUint64(nil, n), rest...)
}

func writeTemp(t testing.TB, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// hostileCases are files Open must refuse, each with the sentinel and the tensor the
// error must name ("" when the error is about the file as a whole).
var hostileCases = []struct {
	name   string
	file   []byte
	want   error
	tensor string
	detail string
}{
	{"shorter than the length field", []byte{1, 0, 0}, ErrHeader, "", "shorter than the 8-byte"},
	{"length 2^63", withLength(1<<63, "{}"), ErrHeader, "", "exceeds the limit"},
	{"length 2^64-1", withLength(math.MaxUint64, "{}"), ErrHeader, "", "exceeds the limit"},
	{"length just over 100 MB", withLength(MaxHeaderBytes+1, "{}"), ErrHeader, "", "exceeds the limit"},
	{"length past the end of the file", withLength(64, "{}"), ErrHeader, "", "only 2 bytes follow"},
	{"length zero", withLength(0, ""), ErrHeader, "", "too short"},
	{"header not UTF-8", rawFile("{\"\xff\":1}", nil), ErrHeader, "", "UTF-8"},
	{"header not an object", rawFile(`[1,2]   `, nil), ErrHeader, "", "start with '{'"},
	{"header with leading space", rawFile(` {}     `, nil), ErrHeader, "", "start with '{'"},
	{"bad JSON", rawFile(`{"a":{"dtype":`, nil), ErrHeader, "a", "bad JSON"},
	{"bad JSON after a name", rawFile(`{"a" "b"}`, nil), ErrHeader, "a", "bad JSON"},
	{"bad JSON before a name", rawFile(`{,}`, nil), ErrHeader, "", "bad JSON"},
	{"garbage after the object", rawFile(`{} x`, nil), ErrHeader, "", "bad JSON"},
	{"second object after the first", rawFile(`{}{}`, nil), ErrHeader, "", "after the header object"},
	{"NUL padding", rawFile("{}\x00\x00\x00\x00\x00\x00", nil), ErrHeader, "", "bad JSON"},
	{"duplicate tensor name", rawFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}`, []byte{1, 2}), ErrHeader, "a", "duplicate tensor name"},
	{"duplicate field", rawFile(`{"a":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, []byte{1}), ErrHeader, "a", "duplicate key"},
	{"unknown field", rawFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"stride":[1]}}`, []byte{1}), ErrHeader, "a", "unknown field"},
	{"missing dtype", rawFile(`{"a":{"shape":[1],"data_offsets":[0,1]}}`, []byte{1}), ErrHeader, "a", "dtype is null"},
	{"unknown dtype", rawFile(`{"a":{"dtype":"Q4_K","shape":[1],"data_offsets":[0,1]}}`, []byte{1}), ErrHeader, "a", `unknown dtype "Q4_K"`},
	{"lower-case dtype", rawFile(`{"a":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)), ErrHeader, "a", "unknown dtype"},
	{"tensor not an object", rawFile(`{"a":[1]}`, nil), ErrHeader, "a", "expected an object"},
	{"shape not an array", rawFile(`{"a":{"dtype":"U8","shape":1,"data_offsets":[0,1]}}`, []byte{1}), ErrHeader, "a", "shape is a number"},
	{"negative dimension", rawFile(`{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}}`, nil), ErrHeader, "a", "negative"},
	{"fractional dimension", rawFile(`{"a":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}}`, []byte{1}), ErrHeader, "a", "not an integer"},
	{"exponent dimension", rawFile(`{"a":{"dtype":"U8","shape":[1e0],"data_offsets":[0,1]}}`, []byte{1}), ErrHeader, "a", "not an integer"},
	{"string dimension", rawFile(`{"a":{"dtype":"U8","shape":["1"],"data_offsets":[0,1]}}`, []byte{1}), ErrHeader, "a", "want an integer"},
	{"dimension over int64", rawFile(`{"a":{"dtype":"U8","shape":[99999999999999999999],"data_offsets":[0,1]}}`, []byte{1}), ErrHeader, "a", "overflows int64"},
	{"element count overflows", rawFile(`{"a":{"dtype":"U8","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}}`, nil), ErrHeader, "a", "element count overflows"},
	{"byte size overflows", rawFile(`{"a":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,0]}}`, nil), ErrHeader, "a", "byte size overflows"},
	{"offset over int64", rawFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,18446744073709551615]}}`, []byte{1}), ErrHeader, "a", "overflows int64"},
	{"negative offset", rawFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}}`, []byte{1}), ErrHeader, "a", "negative"},
	{"three offsets", rawFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}}`, []byte{1}), ErrHeader, "a", "has 3 numbers"},
	{"begin after end", rawFile(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}`, make([]byte, 4)), ErrHeader, "a", "begin after they end"},
	{"offsets not matching shape*size", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`, make([]byte, 4)), ErrHeader, "a", "span 4 bytes but shape [2] of F32 is 8 bytes"},
	{"offsets overlapping", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, make([]byte, 12)), ErrHeader, "b", `overlap tensor "a"`},
	{"same offsets twice", rawFile(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}`, make([]byte, 4)), ErrHeader, "b", "overlap"},
	{"gap between tensors", rawFile(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}}`, make([]byte, 12)), ErrHeader, "b", "gap: bytes 4..8"},
	{"gap before the first tensor", rawFile(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}`, make([]byte, 8)), ErrHeader, "a", "gap: bytes 0..4"},
	{"bytes after the last tensor", rawFile(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}`, make([]byte, 9)), ErrHeader, "", "5 bytes after the last tensor"},
	{"data but no tensors", rawFile(`{}`, []byte{0}), ErrHeader, "", "1 bytes after the last tensor"},
	{"truncated in the first tensor", rawFile(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}}`, make([]byte, 10)), ErrTruncated, "a", "the file is"},
	{"truncated in the second tensor", rawFile(`{"b":{"dtype":"F32","shape":[4],"data_offsets":[16,32]},"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, make([]byte, 20)), ErrTruncated, "b", "end at file offset"},
	{"huge shape, tiny file", rawFile(`{"a":{"dtype":"BF16","shape":[1099511627776,1024],"data_offsets":[0,2251799813685248]}}`, make([]byte, 16)), ErrTruncated, "a", ""},
	{"metadata value not a string", rawFile(`{"__metadata__":{"format":1}}`, nil), ErrHeader, "", `"format" is a number`},
	{"metadata not an object", rawFile(`{"__metadata__":"pt"}`, nil), ErrHeader, "", "expected an object"},
	{"metadata twice", rawFile(`{"__metadata__":{},"__metadata__":{}}`, nil), ErrHeader, "", "duplicate __metadata__"},
}

func TestOpenHostile(t *testing.T) {
	for _, c := range hostileCases {
		t.Run(c.name, func(t *testing.T) {
			p := writeTemp(t, "x.safetensors", c.file)
			f, err := Open(p)
			if err == nil {
				f.Close()
				t.Fatal("accepted")
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("error %v, want %v", err, c.want)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T is not an *Error", err)
			}
			if e.File != p || !strings.Contains(err.Error(), p) {
				t.Errorf("error %q does not name the file %s", err, p)
			}
			if e.Tensor != c.tensor {
				t.Errorf("error names tensor %q, want %q (%v)", e.Tensor, c.tensor, err)
			}
			if !strings.Contains(err.Error(), c.detail) {
				t.Errorf("error %q lacks %q", err, c.detail)
			}
		})
	}
}

// TestOpenHostileAllocation checks that the refusals of huge lengths and shapes cost no
// allocation of the size they claim.
func TestOpenHostileAllocation(t *testing.T) {
	for _, name := range []string{"length 2^63", "length just over 100 MB", "huge shape, tiny file", "byte size overflows"} {
		var file []byte
		for _, c := range hostileCases {
			if c.name == name {
				file = c.file
			}
		}
		p := writeTemp(t, "x.safetensors", file)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for range 10 {
			if _, err := Open(p); err == nil {
				t.Fatalf("%s: accepted", name)
			}
		}
		runtime.ReadMemStats(&after)
		if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
			t.Errorf("%s: 10 refusals allocated %d bytes", name, got)
		}
	}
}

func TestOpenValid(t *testing.T) {
	cases := []struct {
		name    string
		header  string
		data    []byte
		tensors []Info // sorted by name; Offset relative to the data
		meta    map[string]string
	}{
		{"empty, padded", `{}      `, nil, nil, nil},
		{"metadata null", `{"__metadata__":null}`, nil, nil, nil},
		{"metadata", `{"__metadata__":{"format":"pt","é":"\u00e9\n"}}`, nil, nil, map[string]string{"format": "pt", "é": "é\n"}},
		{"scalar and empty tensors",
			`{"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"e":{"dtype":"F32","shape":[3,0],"data_offsets":[4,4]},"z":{"dtype":"I64","shape":[0],"data_offsets":[0,0]}}`, make([]byte, 4),
			[]Info{{"e", F32, []int{3, 0}, 4, 0}, {"s", F32, []int{}, 0, 4}, {"z", I64, []int{0}, 0, 0}}, nil},
		{"offsets out of name order",
			`{"b":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"a":{"dtype":"BF16","shape":[1,1],"data_offsets":[2,4]}}`, []byte{1, 2, 3, 4},
			[]Info{{"a", BF16, []int{1, 1}, 2, 2}, {"b", U8, []int{2}, 0, 2}}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			file := rawFile(c.header, c.data)
			f, err := Open(writeTemp(t, "x.safetensors", file))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got := f.Tensors()
			if len(got) != len(c.tensors) {
				t.Fatalf("got %d tensors %v, want %v", len(got), got, c.tensors)
			}
			for i, w := range c.tensors {
				w.Offset += 8 + int64(len(c.header))
				g := got[i]
				if g.Name != w.Name || g.DType != w.DType || !equalInts(g.Shape, w.Shape) || g.Offset != w.Offset || g.Length != w.Length {
					t.Errorf("tensor %d = %+v, want %+v", i, g, w)
				}
				data, err := f.Data(w.Name)
				if err != nil || int64(len(data)) != w.Length || !equalBytes(data, file[w.Offset:w.Offset+w.Length]) {
					t.Errorf("Data(%s) = %v, %v", w.Name, data, err)
				}
			}
			if len(f.Metadata) != len(c.meta) {
				t.Errorf("metadata %v, want %v", f.Metadata, c.meta)
			}
			for k, v := range c.meta {
				if f.Metadata[k] != v {
					t.Errorf("metadata[%q] = %q, want %q", k, f.Metadata[k], v)
				}
			}
		})
	}
}

func TestDataErrors(t *testing.T) {
	f, err := Open(writeTemp(t, "x.safetensors", rawFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, []byte{7})))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Data("nope"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("Data(nope) = %v", err)
	}
	d, err := f.Data("a")
	if err != nil || len(d) != 1 || d[0] != 7 || cap(d) != 1 {
		t.Errorf("Data(a) = %v (cap %d), %v", d, cap(d), err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Data("a"); !errors.Is(err, ErrClosed) {
		t.Errorf("Data after Close = %v", err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, ok := f.Info("a"); !ok {
		t.Error("Info after Close lost the tensor")
	}
}

func TestOpenNotAFile(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(dir); !errors.Is(err, ErrHeader) {
		t.Errorf("Open(dir) = %v", err)
	}
	if _, err := Open(filepath.Join(dir, "missing.safetensors")); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "missing.safetensors") {
		t.Errorf("Open(missing) = %v", err)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func equalBytes(a, b []byte) bool { return string(a) == string(b) }
