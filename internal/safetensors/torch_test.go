package safetensors

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// torchPython returns a Python that imports torch (Debian's python3-torch lives under
// /usr/bin/python3, which a pyenv shim may hide), or skips.
func torchPython(t *testing.T) string {
	t.Helper()
	for _, py := range []string{"python3", "/usr/bin/python3"} {
		if exec.Command(py, "-c", "import torch").Run() == nil {
			return py
		}
	}
	t.Skip("no python3 with torch (apt-get install python3-torch): skipping the PyTorch cross-check")
	return ""
}

// readerScript parses a safetensors file the way the format spec describes it, independently
// of this package, checks the layout, and prints every tensor through torch.frombuffer.
const readerScript = `
import sys, json, struct, torch
raw = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', raw[:8])[0]
assert n % 8 == 0, 'header not padded to 8'
hdr = json.loads(raw[8:8 + n].decode('utf-8'))
meta = hdr.pop('__metadata__', None)
dt = {'F32': torch.float32, 'BF16': torch.bfloat16, 'F16': torch.float16, 'F64': torch.float64,
      'I32': torch.int32, 'I64': torch.int64, 'I16': torch.int16, 'I8': torch.int8, 'U8': torch.uint8, 'BOOL': torch.bool}
order = sorted(hdr, key=lambda k: tuple(hdr[k]['data_offsets']))
pos, out = 0, {}
for name in order:
    info = hdr[name]
    b, e = info['data_offsets']
    assert b == pos, (name, b, pos)
    pos = e
    d = dt[info['dtype']]
    t = torch.frombuffer(bytearray(raw[8 + n + b:8 + n + e]), dtype=d) if e > b else torch.empty(0, dtype=d)
    t = t.reshape(info['shape'])
    v = t.float() if d in (torch.bfloat16, torch.float16) else t
    out[name] = {'dtype': info['dtype'], 'shape': list(t.shape), 'values': v.flatten().tolist()}
assert 8 + n + pos == len(raw), 'bytes after the last tensor'
print(json.dumps({'metadata': meta, 'order': order, 'tensors': out}))
`

func TestTorchReadsWriteFile(t *testing.T) {
	py := torchPython(t)
	rng := rand.New(rand.NewPCG(1, 2))
	const rows, cols = 5, 7
	f32 := make([]float32, rows*cols)
	bf := make([]uint16, rows*cols)
	i32 := make([]int32, cols)
	i64 := []int64{math.MinInt64 + 1, -1, 0, 1 << 40}
	var f32b, bfb, i32b, i64b []byte
	for i := range f32 {
		f32[i] = float32(rng.NormFloat64())
		bf[i] = BF16FromFloat32(float32(rng.NormFloat64() * 100))
		f32b = binary.LittleEndian.AppendUint32(f32b, math.Float32bits(f32[i]))
		bfb = binary.LittleEndian.AppendUint16(bfb, bf[i])
	}
	for i := range i32 {
		i32[i] = rng.Int32() - 1<<30
		i32b = binary.LittleEndian.AppendUint32(i32b, uint32(i32[i]))
	}
	for _, v := range i64 {
		i64b = binary.LittleEndian.AppendUint64(i64b, uint64(v))
	}
	ts := []Tensor{
		{Name: "w.f32", DType: F32, Shape: []int{rows, cols}, Data: f32b},
		{Name: "w.bf16", DType: BF16, Shape: []int{cols, rows}, Data: bfb},
		{Name: "ids", DType: I32, Shape: []int{cols}, Data: i32b},
		{Name: "big", DType: I64, Shape: []int{2, 2}, Data: i64b},
		{Name: "empty", DType: F32, Shape: []int{0, 3}},
	}
	p := filepath.Join(t.TempDir(), "x.safetensors")
	if err := WriteFile(p, ts, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(py, "-c", readerScript, p).CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	var got struct {
		Metadata map[string]string
		Order    []string
		Tensors  map[string]struct {
			DType  string
			Shape  []int
			Values []json.Number
		}
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	dec.UseNumber()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if got.Metadata["format"] != "pt" {
		t.Errorf("metadata %v", got.Metadata)
	}
	// The crate's layout: dtype rank descending (I64, F32, I32, BF16), then name.
	if want := []string{"big", "empty", "w.f32", "ids", "w.bf16"}; strings.Join(got.Order, ",") != strings.Join(want, ",") {
		t.Errorf("layout %v, want %v", got.Order, want)
	}
	check := func(name string, want []float64) {
		g := got.Tensors[name]
		if len(g.Values) != len(want) {
			t.Fatalf("%s: %d values, want %d", name, len(g.Values), len(want))
		}
		for i, w := range want {
			v, err := g.Values[i].Float64()
			if err != nil || v != w {
				t.Fatalf("%s[%d] = %s, want %v", name, i, g.Values[i], w)
			}
		}
	}
	var wf, wb, wi []float64
	for i := range f32 {
		wf = append(wf, float64(f32[i]))
		wb = append(wb, float64(Float32FromBF16(bf[i])))
	}
	for _, v := range i32 {
		wi = append(wi, float64(v))
	}
	check("w.f32", wf)
	check("w.bf16", wb)
	check("ids", wi)
	for i, v := range got.Tensors["big"].Values { // int64 beyond float64's exact range
		if v.String() != json.Number(formatInt(i64[i])).String() {
			t.Errorf("big[%d] = %s, want %d", i, v, i64[i])
		}
	}
	for name, shape := range map[string][]int{"w.f32": {rows, cols}, "w.bf16": {cols, rows}, "ids": {cols}, "big": {2, 2}, "empty": {0, 3}} {
		if g := got.Tensors[name]; !equalInts(g.Shape, shape) {
			t.Errorf("%s: torch shape %v, want %v", name, g.Shape, shape)
		}
	}
}

// TestTorchBF16Rounding compares BF16FromFloat32 with torch's float32 → bfloat16 on random
// bit patterns and the edge cases. NaNs only need to stay NaN: torch's scalar path gives
// 0x7FC0 and its vectorised one 0xFFFF.
func TestTorchBF16Rounding(t *testing.T) {
	py := torchPython(t)
	rng := rand.New(rand.NewPCG(3, 4))
	bits := []uint32{0x3F800000, 0x80000000, 0x7F800000, 0xFF800000, 0x3F808000, 0x3F818000, 0x3F807FFF,
		0x3F808001, 0x7F7FFFFF, 0x7F7F7FFF, 0x00008000, 0x00018000, 0x00000001, 0x7FC00000, 0x7F800001}
	for range 20000 {
		b := rng.Uint32()
		if rng.IntN(4) == 0 {
			b = b&^0xFFFF | 0x8000 // exact ties
		}
		bits = append(bits, b)
	}
	var in strings.Builder
	for _, b := range bits {
		in.WriteString(formatInt(int64(b)))
		in.WriteByte('\n')
	}
	script := `
import sys, struct, torch
bits = [int(l) for l in sys.stdin.read().split()]
f = torch.frombuffer(bytearray(struct.pack('<%dI' % len(bits), *bits)), dtype=torch.float32)
print(' '.join(str(v & 0xFFFF) for v in f.to(torch.bfloat16).view(torch.int16).tolist()))
`
	cmd := exec.Command(py, "-c", script)
	cmd.Stdin = strings.NewReader(in.String())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	fields := strings.Fields(string(out))
	if len(fields) != len(bits) {
		t.Fatalf("%d results for %d inputs", len(fields), len(bits))
	}
	bad := 0
	for i, b := range bits {
		var want uint16
		for _, c := range fields[i] {
			want = want*10 + uint16(c-'0')
		}
		got := BF16FromFloat32(math.Float32frombits(b))
		if isNaN16(want) && isNaN16(got) {
			continue
		}
		if got != want {
			if bad++; bad <= 10 {
				t.Errorf("%#08x: got %#04x, torch %#04x", b, got, want)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d differ from torch", bad, len(bits))
	}
}

func isNaN16(b uint16) bool { return b&0x7F80 == 0x7F80 && b&0x7F != 0 }

func formatInt(v int64) string { return strconv.FormatInt(v, 10) }
