package safetensors

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// FuzzOpen: Open never panics, and a file it accepts has tensors that tile its data
// exactly and lie within it.
func FuzzOpen(f *testing.F) {
	for _, c := range hostileCases {
		f.Add(c.file)
	}
	f.Add(rawFile(`{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[1,1],"data_offsets":[8,10]}}`, make([]byte, 10)))
	f.Add(rawFile(`{"e":{"dtype":"I64","shape":[0,3],"data_offsets":[0,0]}}`, nil))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, file []byte) {
		p := filepath.Join(dir, "fuzz.safetensors")
		if err := os.WriteFile(p, file, 0o644); err != nil {
			t.Fatal(err)
		}
		st, err := Open(p)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error %T is not an *Error: %v", err, err)
			}
			return
		}
		defer st.Close()
		size := int64(len(file))
		dataStart := 8 + int64(binary.LittleEndian.Uint64(file))
		var covered int64
		for _, info := range st.Tensors() {
			if info.Offset < dataStart || info.Length < 0 || info.Offset+info.Length > size {
				t.Fatalf("tensor %q [%d, +%d) outside data [%d, %d)", info.Name, info.Offset, info.Length, dataStart, size)
			}
			n, err := byteSize(info.Shape, info.DType)
			if err != nil || n != info.Length {
				t.Fatalf("tensor %q: length %d, shape says %d (%v)", info.Name, info.Length, n, err)
			}
			d, err := st.Data(info.Name)
			if err != nil || int64(len(d)) != info.Length {
				t.Fatalf("Data(%q): %d bytes, %v", info.Name, len(d), err)
			}
			covered += info.Length
		}
		if covered != size-dataStart {
			t.Fatalf("tensors cover %d of %d data bytes", covered, size-dataStart)
		}
	})
}
