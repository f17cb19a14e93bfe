package safetensors

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// u8 is a tensor of n bytes, each its index plus seed.
func u8(name string, n int, seed byte) Tensor {
	d := make([]byte, n)
	for i := range d {
		d[i] = byte(i) + seed
	}
	return Tensor{Name: name, DType: U8, Shape: []int{n}, Data: d}
}

// TestPlanShards checks the assignment against huggingface_hub's own tests
// (tests/test_serialization.py): sizes [6, 10, 30, 2, 2] with max 10 give
// [layer_1], [layer_3], [layer_2], [layer_4, layer_5]; with max 100 one shard; five
// int64 scalars (8 bytes) with max 30 give layers 1-3 and 4-5, total_size 40.
func TestPlanShards(t *testing.T) {
	cases := []struct {
		sizes []int64
		max   int64
		want  [][]int
		total int64
	}{
		{[]int64{6, 10, 30, 2, 2}, 10, [][]int{{0}, {2}, {1}, {3, 4}}, 50},
		{[]int64{6, 10, 30, 2, 2}, 100, [][]int{{0, 1, 2, 3, 4}}, 50},
		{[]int64{8, 8, 8, 8, 8}, 30, [][]int{{0, 1, 2}, {3, 4}}, 40},
		{[]int64{8, 8, 8}, 0, [][]int{{0, 1, 2}}, 24},
		{[]int64{5, 5}, 5, [][]int{{0}, {1}}, 10},
		{nil, 10, [][]int{{}}, 0},
	}
	for _, c := range cases {
		got, total := planShards(c.sizes, c.max)
		if !reflect.DeepEqual(got, c.want) || total != c.total {
			t.Errorf("planShards(%v, %d) = %v, %d; want %v, %d", c.sizes, c.max, got, total, c.want, c.total)
		}
	}
}

func TestWriteDirSharded(t *testing.T) {
	dir := t.TempDir()
	var ts []Tensor
	for i, name := range []string{"layer_1", "layer_2", "layer_3", "layer_4", "layer_5"} {
		ts = append(ts, Tensor{Name: name, DType: I64, Shape: []int{1}, Data: []byte{byte(i + 1), 0, 0, 0, 0, 0, 0, 0}})
	}
	files, err := WriteDir(dir, ts, 30, map[string]string{"format": "pt"})
	if err != nil {
		t.Fatal(err)
	}
	wantFiles := []string{
		filepath.Join(dir, "model-00001-of-00002.safetensors"),
		filepath.Join(dir, "model-00002-of-00002.safetensors"),
		filepath.Join(dir, IndexName),
	}
	if !reflect.DeepEqual(files, wantFiles) {
		t.Fatalf("files %v, want %v", files, wantFiles)
	}
	// Python: json.dumps({"metadata": {"total_size": 40}, "weight_map": {...}}, indent=2, sort_keys=True) + "\n"
	wantIndex := `{
  "metadata": {
    "total_size": 40
  },
  "weight_map": {
    "layer_1": "model-00001-of-00002.safetensors",
    "layer_2": "model-00001-of-00002.safetensors",
    "layer_3": "model-00001-of-00002.safetensors",
    "layer_4": "model-00002-of-00002.safetensors",
    "layer_5": "model-00002-of-00002.safetensors"
  }
}
`
	if b, _ := os.ReadFile(files[2]); string(b) != wantIndex {
		t.Errorf("index\n%s\nwant\n%s", b, wantIndex)
	}
	if !HasWeights(dir) {
		t.Error("HasWeights = false")
	}
	d, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Names(); !reflect.DeepEqual(got, []string{"layer_1", "layer_2", "layer_3", "layer_4", "layer_5"}) {
		t.Errorf("Names %v", got)
	}
	for i, tn := range ts {
		info, f, ok := d.Info(tn.Name)
		wantShard := files[0]
		if i >= 3 {
			wantShard = files[1]
		}
		if !ok || f.Path != wantShard || info.DType != I64 {
			t.Errorf("%s: %+v in %v", tn.Name, info, f)
		}
		data, err := d.Data(tn.Name)
		if err != nil || string(data) != string(tn.Data) {
			t.Errorf("%s: %v %v", tn.Name, data, err)
		}
	}
	if _, err := d.Data("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Data(nope) = %v", err)
	}
	fp := d.Fingerprint()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	// Saving again as one file removes the shards and the index, as save_pretrained does.
	os.WriteFile(filepath.Join(dir, "config.json"), []byte("{}"), 0o644)
	files, err = WriteDir(dir, ts, 0, map[string]string{"format": "pt"})
	if err != nil || !reflect.DeepEqual(files, []string{filepath.Join(dir, SingleName)}) {
		t.Fatalf("single: %v, %v", files, err)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !reflect.DeepEqual(names, []string{"config.json", SingleName}) {
		t.Errorf("directory holds %v", names)
	}
	d, err = OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if len(d.Files) != 1 || len(d.Names()) != 5 {
		t.Errorf("single file dir: %d files, %v", len(d.Files), d.Names())
	}
	if d.Fingerprint() == fp {
		t.Error("the fingerprint did not change with the layout")
	}
}

// shardedDir writes a two-shard directory (a, b in shard 1; c in shard 2) and returns it.
func shardedDir(t *testing.T) string {
	dir := t.TempDir()
	if _, err := WriteDir(dir, []Tensor{u8("a", 4, 0), u8("b", 4, 1), u8("c", 4, 2)}, 8, nil); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestOpenDirRefuses(t *testing.T) {
	const s1, s2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
	index := func(wm string) string { return `{"metadata":{"total_size":12},"weight_map":{` + wm + `}}` }
	cases := []struct {
		name   string
		setup  func(t *testing.T, dir string)
		want   error
		file   string // base name of the file the error names
		tensor string
		detail string
	}{
		{"empty directory", func(t *testing.T, dir string) {}, ErrNoWeights, "", "", "no model.safetensors"},
		{"only config.json", func(t *testing.T, dir string) { write(t, dir, "config.json", "{}") }, ErrNoWeights, "", "", "no model.safetensors"},
		{"only an adapter", func(t *testing.T, dir string) {
			if err := WriteFile(filepath.Join(dir, "adapter_model.safetensors"), nil, nil); err != nil {
				t.Fatal(err)
			}
		}, ErrNoWeights, "", "", "only adapter_model.safetensors"},
		{"consolidated only", func(t *testing.T, dir string) {
			if err := WriteFile(filepath.Join(dir, NativeName), []Tensor{u8("layers.0.attention.wq.weight", 4, 0)}, nil); err != nil {
				t.Fatal(err)
			}
		}, ErrNativeFormat, NativeName, "", "use the Hugging Face layout"},
		{"shards without index", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, IndexName)) }, ErrIndex, IndexName, "", "missing, yet the directory holds shards"},
		{"index naming a missing shard", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, s2)) }, ErrIndex, IndexName, "c", "cannot be opened"},
		{"tensor in the wrong shard", func(t *testing.T, dir string) {
			write(t, dir, IndexName, index(`"a":"`+s1+`","b":"`+s2+`","c":"`+s2+`"`))
		}, ErrIndex, s1, "b", "places it in " + s2},
		{"tensor in a shard but not the index", func(t *testing.T, dir string) {
			write(t, dir, IndexName, index(`"a":"`+s1+`","c":"`+s2+`"`))
		}, ErrIndex, s1, "b", "not in model.safetensors.index.json"},
		{"tensor in the index but not the shard", func(t *testing.T, dir string) {
			write(t, dir, IndexName, index(`"a":"`+s1+`","b":"`+s1+`","c":"`+s2+`","d":"`+s2+`"`))
		}, ErrIndex, s2, "d", "which lacks it"},
		{"shard name escaping the directory", func(t *testing.T, dir string) {
			write(t, dir, IndexName, index(`"a":"../`+s1+`"`))
		}, ErrIndex, IndexName, "a", "not a plain file name"},
		{"index bad JSON", func(t *testing.T, dir string) { write(t, dir, IndexName, `{"weight_map":`) }, ErrIndex, IndexName, "", "bad JSON"},
		{"index without weight_map", func(t *testing.T, dir string) { write(t, dir, IndexName, `{"metadata":{}}`) }, ErrIndex, IndexName, "", "no weight_map"},
		{"index with empty weight_map", func(t *testing.T, dir string) { write(t, dir, IndexName, index(``)) }, ErrIndex, IndexName, "", "empty"},
		{"index duplicate key", func(t *testing.T, dir string) {
			write(t, dir, IndexName, index(`"a":"`+s1+`","a":"`+s1+`"`))
		}, ErrIndex, IndexName, "", "duplicate key"},
		{"index value not a string", func(t *testing.T, dir string) { write(t, dir, IndexName, index(`"a":1`)) }, ErrIndex, IndexName, "a", "want a file name"},
		{"truncated shard", func(t *testing.T, dir string) {
			p := filepath.Join(dir, s2)
			st, _ := os.Stat(p)
			os.Truncate(p, st.Size()-1)
		}, ErrTruncated, s2, "c", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if strings.Contains(c.name, "shard") || strings.Contains(c.name, "index") {
				dir = shardedDir(t)
			}
			c.setup(t, dir)
			d, err := OpenDir(dir)
			if err == nil {
				d.Close()
				t.Fatal("accepted")
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("error %v, want %v", err, c.want)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("%T", err)
			}
			wantFile := dir
			if c.file != "" {
				wantFile = filepath.Join(dir, c.file)
			}
			if e.File != wantFile || e.Tensor != c.tensor || !strings.Contains(err.Error(), c.detail) {
				t.Errorf("error %q: want file %s, tensor %q, %q", err, wantFile, c.tensor, c.detail)
			}
			if HasWeights(dir) != (c.want != ErrNoWeights && c.want != ErrNativeFormat && c.name != "shards without index") {
				t.Errorf("HasWeights = %v", HasWeights(dir))
			}
		})
	}
}

// TestOpenDirPrefersSingle: with both model.safetensors and an index present, the single
// file wins, as in transformers.
func TestOpenDirPrefersSingle(t *testing.T) {
	dir := shardedDir(t)
	if err := WriteFile(filepath.Join(dir, SingleName), []Tensor{u8("only", 3, 0)}, nil); err != nil {
		t.Fatal(err)
	}
	d, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if got := d.Names(); !reflect.DeepEqual(got, []string{"only"}) {
		t.Errorf("Names %v", got)
	}
}

func TestIndexJSONEscapes(t *testing.T) {
	got := string(indexJSON(3, map[string]string{"é\"\\\x01\x7f😀": "x", "a\n": "y"}))
	// Python: json.dumps({...}, indent=2, sort_keys=True)
	want := "{\n  \"metadata\": {\n    \"total_size\": 3\n  },\n  \"weight_map\": {\n" +
		`    "a\n": "y",` + "\n" +
		`    "\u00e9\"\\\u0001\u007f\ud83d\ude00": "x"` + "\n  }\n}\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestOpenDirSymlinkedSnapshot: a Hugging Face cache snapshot holds symlinks into
// ../../blobs; they are followed.
func TestOpenDirSymlinkedSnapshot(t *testing.T) {
	src := shardedDir(t)
	root := t.TempDir()
	blobs := filepath.Join(root, "blobs")
	snap := filepath.Join(root, "snapshots", "abc123")
	for _, d := range []string{blobs, snap} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	entries, _ := os.ReadDir(src)
	for i, e := range entries {
		blob := filepath.Join(blobs, "blob"+string(rune('0'+i)))
		if err := os.Rename(filepath.Join(src, e.Name()), blob); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..", "..", "blobs", filepath.Base(blob)), filepath.Join(snap, e.Name())); err != nil {
			t.Skip("no symlinks here:", err)
		}
	}
	if !HasWeights(snap) {
		t.Fatal("HasWeights = false")
	}
	d, err := OpenDir(snap)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if got := d.Names(); !reflect.DeepEqual(got, []string{"a", "b", "c"}) {
		t.Errorf("Names %v", got)
	}
	if b, err := d.Data("c"); err != nil || string(b) != "\x02\x03\x04\x05" {
		t.Errorf("Data(c) = %q, %v", b, err)
	}
}
