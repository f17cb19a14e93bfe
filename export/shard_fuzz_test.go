package export

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// fuzzShard is one intact shard FuzzShardReader damages, and how to read it back.
type fuzzShard struct {
	name string
	data []byte
	// read reads the file at path as the shard's row type in batches of batch rows, and
	// reports whether the rows equal the ones written.
	read func(path string, batch int) (same bool, err error)
}

// fuzzShards writes one small multi-row-group shard of each kind in each format.
func fuzzShards(f *testing.F) []fuzzShard {
	fx := newFixture()
	dir := f.TempDir()
	opt := WriterOptions{Format: FormatBoth, RowGroupRows: 3}
	var out []fuzzShard
	add := func(files []FileInfo, err error, read func(string, int) (bool, error)) {
		if err != nil {
			f.Fatal(err)
		}
		for _, fi := range files {
			b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(fi.Path)))
			if err != nil {
				f.Fatal(err)
			}
			out = append(out, fuzzShard{name: fi.Path, data: b, read: read})
		}
	}
	files, err := writeAll(dir, KindKTO, fx.kto["train"], opt)
	add(files, err, readerFor(fx.kto["train"]))
	files, err = writeAll(dir, KindKTOPacked, fx.packed["train"], opt)
	add(files, err, readerFor(fx.packed["train"]))
	files, err = writeAll(dir, KindSFT, fx.sft["train"], opt)
	add(files, err, readerFor(fx.sft["train"]))
	return out
}

func writeAll[T any](dir, kind string, rows []T, opt WriterOptions) ([]FileInfo, error) {
	w, err := NewShardWriter[T](dir, kind, "train", opt)
	if err != nil {
		return nil, err
	}
	if err := w.Write(rows...); err != nil {
		w.Abort()
		return nil, err
	}
	return w.Close()
}

// readerFor reads a file through the public reader, Read in batches then ReadRows, and
// compares with want.
func readerFor[T any](want []T) func(string, int) (bool, error) {
	return func(path string, batch int) (bool, error) {
		r, err := OpenReader[T](path)
		if err != nil {
			return false, err
		}
		var got []T
		buf := make([]T, batch)
		for {
			n, err := r.Read(buf)
			got = append(got, buf[:n]...)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				r.Close()
				return false, err
			}
			if n == 0 {
				r.Close()
				return false, errors.New("Read returned 0 rows and no error")
			}
		}
		if err := r.Close(); err != nil {
			return false, err
		}
		var again []T
		if err := ReadRows(path, func(row T) error { again = append(again, row); return nil }); err != nil {
			return false, errors.Join(errors.New("Read succeeded, ReadRows failed"), err)
		}
		// A flip in plain data may read as other values, batch size dependent; but never
		// as fewer or more rows (the footer's count is checked).
		if len(got) != len(again) {
			return false, fmt.Errorf("Read gives %d rows, ReadRows %d", len(got), len(again))
		}
		return reflect.DeepEqual(normalize(got), normalize(want)), nil
	}
}

// FuzzShardReader damages a valid shard (kto, kto_packed or sft rows; Parquet or Arrow) by
// flipping bytes at fuzzed positions (from the start or the end) and cutting it at a fuzzed
// length, then reads it with
// OpenReader/Read (in fuzzed batch sizes) and ReadRows. Whatever the damage: no panic and
// no unbounded allocation; an error is ErrCorrupt or ErrSchema in a *FileError naming the
// file; a shortened file is always an error; both ways of reading give as many rows; an
// undamaged file reads back the rows written. A flip inside plain data may read fine with
// other values: that is what the sha256 in the manifest is for (Verify).
func FuzzShardReader(f *testing.F) {
	f.Add(uint8(0), []byte{}, uint32(0), uint8(2))
	f.Add(uint8(1), []byte{}, uint32(0), uint8(1))
	f.Add(uint8(0), []byte{0, 0, 0xff}, uint32(0), uint8(4))       // first magic byte
	f.Add(uint8(1), []byte{8, 0, 0x01}, uint32(0), uint8(4))       // Arrow: into the schema message
	f.Add(uint8(2), []byte{0xf0, 0x7f, 0x10}, uint32(0), uint8(7)) // somewhere in the middle
	f.Add(uint8(0), []byte{4, 0x80, 0x40}, uint32(0), uint8(2))    // Parquet footer length, top byte
	f.Add(uint8(1), []byte{6, 0x80, 0x40}, uint32(0), uint8(2))    // Arrow footer length, top byte
	f.Add(uint8(3), []byte{}, uint32(100), uint8(3))
	f.Add(uint8(4), []byte{0x40, 0x01, 0x80, 0x41, 0x01, 0x7f}, uint32(0), uint8(1))
	f.Add(uint8(5), []byte{}, uint32(0xffff_fff0), uint8(0))
	shards := fuzzShards(f)
	f.Fuzz(func(t *testing.T, which uint8, flips []byte, cut uint32, batch uint8) {
		sh := shards[int(which)%len(shards)]
		b := append([]byte(nil), sh.data...)
		damaged := false
		for i := 0; i+2 < len(flips) && i < 3*16; i += 3 {
			// Two bytes of position, counted from the end when the top bit is set (footers
			// are where readers take their lengths from), then the bits to flip.
			pos := (int(flips[i]) | int(flips[i+1]&0x7f)<<8) % len(b)
			if flips[i+1]&0x80 != 0 {
				pos = len(b) - 1 - pos
			}
			x := flips[i+2]
			if x == 0 {
				x = 0xff
			}
			b[pos] ^= x
			damaged = true
		}
		shortened := false
		if cut > 0 {
			if n := int(cut % uint32(len(b))); n < len(b) {
				b, shortened, damaged = b[:n], true, true
			}
		}
		p := filepath.Join(t.TempDir(), "x"+filepath.Ext(sh.name))
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		same, err := sh.read(p, 1+int(batch%8))
		if err != nil {
			var fe *FileError
			if !(errors.Is(err, ErrCorrupt) || errors.Is(err, ErrSchema)) || !errors.As(err, &fe) || fe.Path != p {
				t.Fatalf("%s: error %v is not ErrCorrupt/ErrSchema naming the file", sh.name, err)
			}
			if !damaged {
				t.Fatalf("%s: undamaged file fails: %v", sh.name, err)
			}
			return
		}
		if shortened {
			t.Fatalf("%s cut to %d of %d bytes reads without an error", sh.name, len(b), len(sh.data))
		}
		if !damaged && !same {
			t.Fatalf("%s: undamaged file reads other rows", sh.name)
		}
	})
}
