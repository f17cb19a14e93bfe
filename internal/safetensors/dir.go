package safetensors

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// File names of a Hugging Face model directory.
const (
	SingleName = "model.safetensors"
	IndexName  = "model.safetensors.index.json"
	NativeName = "consolidated.safetensors" // Mistral's own layout and tensor names
)

// maxIndexBytes bounds model.safetensors.index.json; a 7B model's is about 25 KB.
const maxIndexBytes = 64 << 20

// shardName matches the shard names transformers writes.
var shardName = regexp.MustCompile(`^model-\d{5}-of-\d{5}\.safetensors$`)

// Dir is the weights of a Hugging Face model directory: one file or the shards of an
// index, every tensor checked to be where the index says.
type Dir struct {
	Path  string
	Files []*File // sorted by path

	byName map[string]dirEntry
	names  []string
}

type dirEntry struct {
	file *File
	info Info
}

// HasWeights reports whether dir holds Hugging Face weights: model.safetensors or
// model.safetensors.index.json.
func HasWeights(dir string) bool {
	return isFile(filepath.Join(dir, SingleName)) || isFile(filepath.Join(dir, IndexName))
}

func isFile(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}

// OpenDir opens the weights in dir. model.safetensors is taken when present (as
// transformers does), else model.safetensors.index.json and the shards its weight_map
// names: each shard must exist and hold exactly the tensors the index assigns to it.
// A directory with only Mistral's consolidated.safetensors is ErrNativeFormat; one with no
// weights at all is ErrNoWeights; shards without their index are ErrIndex.
func OpenDir(dir string) (*Dir, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, &Error{File: dir, Err: err}
	}
	if !st.IsDir() {
		return nil, &Error{File: dir, Err: ErrNoWeights, Detail: "not a directory"}
	}
	single := filepath.Join(dir, SingleName)
	if isFile(single) {
		f, err := Open(single)
		if err != nil {
			return nil, err
		}
		return newDir(dir, []*File{f}), nil
	}
	index := filepath.Join(dir, IndexName)
	if isFile(index) {
		return openIndexed(dir, index)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, &Error{File: dir, Err: err}
	}
	var native, shards, others []string
	for _, e := range entries {
		name := e.Name()
		switch {
		case !strings.HasSuffix(name, ".safetensors"):
		case strings.HasPrefix(name, "consolidated"):
			native = append(native, name)
		case shardName.MatchString(name):
			shards = append(shards, name)
		default:
			others = append(others, name)
		}
	}
	switch {
	case len(shards) > 0:
		return nil, &Error{File: index, Err: ErrIndex,
			Detail: fmt.Sprintf("missing, yet the directory holds shards (%s)", strings.Join(shards, ", "))}
	case len(native) > 0:
		return nil, &Error{File: filepath.Join(dir, native[0]), Err: ErrNativeFormat,
			Detail: "this is Mistral's native layout (its own tensor names, interleaved RoPE), which this loader " +
				"does not read; use the Hugging Face layout files: " + SingleName + ", or model-0000N-of-0000M.safetensors with " + IndexName}
	case len(others) > 0:
		return nil, &Error{File: dir, Err: ErrNoWeights,
			Detail: fmt.Sprintf("no %s or %s (only %s)", SingleName, IndexName, strings.Join(others, ", "))}
	}
	return nil, &Error{File: dir, Err: ErrNoWeights, Detail: fmt.Sprintf("no %s or %s", SingleName, IndexName)}
}

func newDir(path string, files []*File) *Dir {
	d := &Dir{Path: path, Files: files, byName: map[string]dirEntry{}}
	for _, f := range files {
		for _, t := range f.tensors {
			d.byName[t.Name] = dirEntry{f, t}
			d.names = append(d.names, t.Name)
		}
	}
	sort.Strings(d.names)
	return d
}

// openIndexed opens the shards named by the index at path and checks them against it.
func openIndexed(dir, path string) (_ *Dir, err error) {
	weightMap, err := readIndex(path)
	if err != nil {
		return nil, err
	}
	byShard := map[string][]string{}
	for name, shard := range weightMap {
		byShard[shard] = append(byShard[shard], name)
	}
	shards := make([]string, 0, len(byShard))
	for s := range byShard {
		shards = append(shards, s)
		sort.Strings(byShard[s])
	}
	sort.Strings(shards)
	var files []*File
	defer func() {
		if err != nil {
			for _, f := range files {
				f.Close()
			}
		}
	}()
	for _, shard := range shards {
		sp := filepath.Join(dir, shard)
		if _, serr := os.Stat(sp); serr != nil {
			return nil, &Error{File: path, Tensor: byShard[shard][0], Err: ErrIndex,
				Detail: fmt.Sprintf("the index places it in %s, which cannot be opened: %v", shard, serr)}
		}
		f, err := Open(sp)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
		want := byShard[shard]
		for _, t := range f.tensors {
			s, ok := weightMap[t.Name]
			switch {
			case !ok:
				return nil, &Error{File: sp, Tensor: t.Name, Err: ErrIndex, Detail: "in the shard but not in " + IndexName}
			case s != shard:
				return nil, &Error{File: sp, Tensor: t.Name, Err: ErrIndex, Detail: "in this shard but " + IndexName + " places it in " + s}
			}
		}
		for _, name := range want {
			if _, ok := f.byName[name]; !ok {
				return nil, &Error{File: sp, Tensor: name, Err: ErrIndex, Detail: IndexName + " places it in this shard, which lacks it"}
			}
		}
	}
	return newDir(dir, files), nil
}

// readIndex reads the weight_map of a model.safetensors.index.json: tensor name → shard
// file name, each a plain file name in the same directory.
func readIndex(path string) (map[string]string, error) {
	fail := func(tensor, detail string, args ...any) error {
		return &Error{File: path, Tensor: tensor, Err: ErrIndex, Detail: fmt.Sprintf(detail, args...)}
	}
	fh, err := os.Open(path)
	if err != nil {
		return nil, &Error{File: path, Err: err}
	}
	defer fh.Close()
	raw, err := io.ReadAll(io.LimitReader(fh, maxIndexBytes+1))
	if err != nil {
		return nil, &Error{File: path, Err: err}
	}
	if len(raw) > maxIndexBytes {
		return nil, fail("", "larger than %d bytes", maxIndexBytes)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, fail("", "bad JSON: %v", err)
	}
	wm, ok := top["weight_map"]
	if !ok {
		return nil, fail("", "no weight_map")
	}
	dec := json.NewDecoder(bytes.NewReader(wm))
	var m map[string]any
	if err := decodeObject(dec, &m); err != nil {
		return nil, fail("", "weight_map: %v", err)
	}
	if len(m) == 0 {
		return nil, fail("", "weight_map is empty")
	}
	out := make(map[string]string, len(m))
	for name, v := range m {
		s, ok := v.(string)
		if !ok {
			return nil, fail(name, "weight_map value is %s, want a file name", jsonKind(v))
		}
		if s == "" || s == "." || s == ".." || strings.ContainsAny(s, `/\`) || s != filepath.Base(s) {
			return nil, fail(name, "shard %q is not a plain file name in the index's directory", s)
		}
		out[name] = s
	}
	return out, nil
}

// Names lists every tensor of the directory, sorted.
func (d *Dir) Names() []string { return append([]string(nil), d.names...) }

// Info returns the named tensor's description and the file holding it.
func (d *Dir) Info(name string) (Info, *File, bool) {
	e, ok := d.byName[name]
	return e.info, e.file, ok
}

// Data returns the named tensor's bytes, a view valid until Close.
func (d *Dir) Data(name string) ([]byte, error) {
	e, ok := d.byName[name]
	if !ok {
		return nil, &Error{File: d.Path, Tensor: name, Err: ErrNotFound}
	}
	return e.file.Data(name)
}

// Fingerprint identifies the weights without reading them: a hex SHA-256 over each file's
// name, size and header (names, dtypes, shapes, offsets). Rewriting the values in place
// with the same layout would not change it; any re-export, merge or other checkpoint does.
func (d *Dir) Fingerprint() string {
	h := sha256.New()
	for _, f := range d.Files {
		var n [8]byte
		h.Write([]byte(filepath.Base(f.Path)))
		h.Write([]byte{0})
		binary.LittleEndian.PutUint64(n[:], uint64(f.size))
		h.Write(n[:])
		h.Write(f.headerSum[:])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Close unmaps every file.
func (d *Dir) Close() error {
	var errs []error
	for _, f := range d.Files {
		if err := f.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
