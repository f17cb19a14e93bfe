package safetensors

import (
	"encoding/binary"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func f32Bytes(vs ...float32) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

// TestWriteFileBytes checks WriteFile's bytes against files built by hand from the format
// spec (8-byte little-endian length, JSON header padded with spaces to a multiple of 8,
// data). The first three are the expected outputs of the Rust crate's own tests
// (safetensors/src/tensor.rs: test_serialization, test_serialization_forced_alignement,
// test_empty), which Python's save_file reproduces since it calls that code.
func TestWriteFileBytes(t *testing.T) {
	six := f32Bytes(0, 1, 2, 3, 4, 5)
	cases := []struct {
		name   string
		ts     []Tensor
		meta   map[string]string
		header string // unpadded
		data   []byte
		rustN  uint64 // the header length in the Rust test's expected bytes, 0 if not from there
	}{
		{"rust test_serialization", []Tensor{{Name: "attn.0", DType: F32, Shape: []int{1, 2, 3}, Data: six}}, nil,
			`{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}`, six, 64},
		{"rust forced alignment", []Tensor{{Name: "attn0", DType: F32, Shape: []int{1, 1, 2, 3}, Data: six}}, nil,
			`{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}`, six, 72},
		{"rust test_empty", nil, nil, `{}`, nil, 8},
		{"rust test_empty with metadata", nil, map[string]string{"framework": "pt"}, `{"__metadata__":{"framework":"pt"}}`, nil, 40},
		{"empty metadata is kept", nil, map[string]string{}, `{"__metadata__":{}}`, nil, 0},
		{"layout by dtype rank then name",
			[]Tensor{
				{Name: "b", DType: I32, Shape: []int{2}, Data: []byte{1, 0, 0, 0, 2, 0, 0, 0}},
				{Name: "a", DType: BF16, Shape: []int{3}, Data: []byte{0x80, 0x3f, 0, 0x40, 0x40, 0x40}},
				{Name: "z", DType: U8, Shape: []int{1}, Data: []byte{9}},
				{Name: "m", DType: F32, Shape: []int{2}, Data: f32Bytes(1.5, -2)},
				{Name: "c", DType: F64, Shape: []int{}, Data: []byte{0, 0, 0, 0, 0, 0, 0xf0, 0x3f}},
				{Name: "y", DType: F32, Shape: []int{0, 4}},
			},
			map[string]string{"format": "pt", "b": "2"},
			`{"__metadata__":{"b":"2","format":"pt"},` +
				`"c":{"dtype":"F64","shape":[],"data_offsets":[0,8]},` +
				`"m":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},` +
				`"y":{"dtype":"F32","shape":[0,4],"data_offsets":[16,16]},` +
				`"b":{"dtype":"I32","shape":[2],"data_offsets":[16,24]},` +
				`"a":{"dtype":"BF16","shape":[3],"data_offsets":[24,30]},` +
				`"z":{"dtype":"U8","shape":[1],"data_offsets":[30,31]}}`,
			append(append(append(append([]byte{0, 0, 0, 0, 0, 0, 0xf0, 0x3f}, f32Bytes(1.5, -2)...),
				1, 0, 0, 0, 2, 0, 0, 0), 0x80, 0x3f, 0, 0x40, 0x40, 0x40), 9), 0},
		{"names escaped as serde_json does",
			[]Tensor{{Name: "q\"\\\n\t\x01\x7fé€😀", DType: U8, Shape: []int{1}, Data: []byte{5}}}, nil,
			`{"q\"\\\n\t\u0001` + "\x7fé€😀" + `":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, []byte{5}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			hdr := c.header + strings.Repeat(" ", (8-len(c.header)%8)%8)
			want := rawFile(hdr, c.data)
			p := filepath.Join(t.TempDir(), "out.safetensors")
			if err := WriteFile(p, c.ts, c.meta); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if c.rustN != 0 && binary.LittleEndian.Uint64(got) != c.rustN {
				t.Errorf("header length %d, the Rust crate's is %d", binary.LittleEndian.Uint64(got), c.rustN)
			}
			if string(got) != string(want) {
				t.Fatalf("bytes differ\n got %q\nwant %q", got, want)
			}
			f, err := Open(p) // what we write we read back
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for _, tn := range c.ts {
				d, err := f.Data(tn.Name)
				if err != nil || string(d) != string(tn.Data) {
					t.Errorf("%s read back as %v, %v", tn.Name, d, err)
				}
			}
		})
	}
}

// TestRoundTrip writes F32, BF16 and I32 tensors, some through Data and some streamed
// through Write in uneven pieces, and reads them back.
func TestRoundTrip(t *testing.T) {
	const rows, cols = 37, 53
	f32 := make([]float32, rows*cols)
	bf := make([]uint16, rows*cols)
	i32 := make([]int32, rows)
	for i := range f32 {
		f32[i] = float32(math.Sin(float64(i))) * 1000
		bf[i] = BF16FromFloat32(f32[i] / 7)
	}
	for i := range i32 {
		i32[i] = int32(i*i*i) - 1<<20
	}
	var bfBytes, i32Bytes []byte
	for _, v := range bf {
		bfBytes = binary.LittleEndian.AppendUint16(bfBytes, v)
	}
	for _, v := range i32 {
		i32Bytes = binary.LittleEndian.AppendUint32(i32Bytes, uint32(v))
	}
	f32Data := f32Bytes(f32...)
	streamed := func(b []byte) func(io.Writer) error {
		return func(w io.Writer) error {
			for len(b) > 0 { // pieces of 1, 2, 3, ... bytes: the writer must not care
				n := min(len(b), 1+len(b)%97)
				if _, err := w.Write(b[:n]); err != nil {
					return err
				}
				b = b[n:]
			}
			return nil
		}
	}
	ts := []Tensor{
		{Name: "model.layers.0.mlp.up_proj.weight", DType: F32, Shape: []int{rows, cols}, Data: f32Data},
		{Name: "model.layers.0.self_attn.q_proj.weight", DType: BF16, Shape: []int{rows, cols}, Write: streamed(bfBytes)},
		{Name: "model.positions", DType: I32, Shape: []int{rows}, Write: streamed(i32Bytes)},
		{Name: "model.norm.weight", DType: BF16, Shape: []int{cols}, Data: bfBytes[:2*cols]},
	}
	p := filepath.Join(t.TempDir(), "model.safetensors")
	if err := WriteFile(p, ts, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	f, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Metadata["format"] != "pt" || len(f.Metadata) != 1 {
		t.Errorf("metadata %v", f.Metadata)
	}
	want := map[string][]byte{ts[0].Name: f32Data, ts[1].Name: bfBytes, ts[2].Name: i32Bytes, ts[3].Name: bfBytes[:2*cols]}
	infos := f.Tensors()
	if len(infos) != len(ts) {
		t.Fatalf("%d tensors", len(infos))
	}
	for i := 1; i < len(infos); i++ {
		if infos[i-1].Name >= infos[i].Name {
			t.Errorf("Tensors not sorted by name: %q before %q", infos[i-1].Name, infos[i].Name)
		}
	}
	for _, tn := range ts {
		info, ok := f.Info(tn.Name)
		if !ok || info.DType != tn.DType || !equalInts(info.Shape, tn.Shape) {
			t.Errorf("%s: info %+v", tn.Name, info)
		}
		d, err := f.Data(tn.Name)
		if err != nil || string(d) != string(want[tn.Name]) {
			t.Errorf("%s: data differ (%v)", tn.Name, err)
		}
	}
	got, _ := f.Data(ts[0].Name)
	for i := range f32 {
		if v := math.Float32frombits(binary.LittleEndian.Uint32(got[4*i:])); v != f32[i] {
			t.Fatalf("f32[%d] = %v, want %v", i, v, f32[i])
		}
	}
}

func TestWriteFileRefuses(t *testing.T) {
	short := func(w io.Writer) error { _, err := w.Write([]byte{1, 2, 3}); return err }
	long := func(w io.Writer) error { _, err := w.Write(make([]byte, 5)); return err }
	failing := func(w io.Writer) error { return errors.New("device lost") }
	cases := []struct {
		name   string
		ts     []Tensor
		want   error
		tensor string
		detail string
	}{
		{"no name", []Tensor{{DType: U8, Shape: []int{0}}}, ErrTensor, "", "no name"},
		{"reserved name", []Tensor{{Name: "__metadata__", DType: U8, Shape: []int{0}}}, ErrTensor, "__metadata__", "reserved"},
		{"name not UTF-8", []Tensor{{Name: "a\xff", DType: U8, Shape: []int{0}}}, ErrTensor, "a\xff", "UTF-8"},
		{"duplicate", []Tensor{{Name: "a", DType: U8, Shape: []int{0}}, {Name: "a", DType: U8, Shape: []int{0}}}, ErrTensor, "a", "duplicate"},
		{"unknown dtype", []Tensor{{Name: "a", DType: "F8_E3M4", Shape: []int{0}}}, ErrTensor, "a", "unknown dtype"},
		{"negative dim", []Tensor{{Name: "a", DType: U8, Shape: []int{-1}}}, ErrTensor, "a", "negative"},
		{"overflowing shape", []Tensor{{Name: "a", DType: F32, Shape: []int{1 << 31, 1 << 31}}}, ErrTensor, "a", "overflows"},
		{"data too short", []Tensor{{Name: "a", DType: F32, Shape: []int{2}, Data: make([]byte, 7)}}, ErrTensor, "a", "holds 7 bytes"},
		{"no data", []Tensor{{Name: "a", DType: F32, Shape: []int{2}}}, ErrTensor, "a", "holds 0 bytes"},
		{"both data and write", []Tensor{{Name: "a", DType: U8, Shape: []int{1}, Data: []byte{1}, Write: short}}, ErrTensor, "a", "both"},
		{"write too short", []Tensor{{Name: "a", DType: F32, Shape: []int{1}, Write: short}}, ErrTensor, "a", "wrote 3 bytes"},
		{"write too long", []Tensor{{Name: "a", DType: F32, Shape: []int{1}, Write: long}}, ErrTensor, "a", "more than"},
		{"write fails", []Tensor{{Name: "b", DType: U8, Shape: []int{1}, Data: []byte{1}}, {Name: "a", DType: F32, Shape: []int{1}, Write: failing}}, nil, "a", "device lost"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "out.safetensors")
			if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
				t.Fatal(err)
			}
			err := WriteFile(p, c.ts, nil)
			var e *Error
			if err == nil || !errors.As(err, &e) {
				t.Fatalf("error %v", err)
			}
			if c.want != nil && !errors.Is(err, c.want) {
				t.Errorf("error %v, want %v", err, c.want)
			}
			if e.Tensor != c.tensor || !strings.Contains(err.Error(), c.detail) || !strings.Contains(err.Error(), p) {
				t.Errorf("error %q: want tensor %q, %q and the path", err, c.tensor, c.detail)
			}
			if b, _ := os.ReadFile(p); string(b) != "old" {
				t.Errorf("the old file was replaced by %q", b)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 1 {
				t.Errorf("temporary files left: %v", entries)
			}
		})
	}
}
