package safetensors

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"github.com/ktoloader/ktoloader/internal/jsonstr"
)

// WriteDir writes ts into dir as Hugging Face's save_pretrained does: one
// model.safetensors when the tensors' bytes total at most maxShardBytes (or
// maxShardBytes <= 0), else shards model-00001-of-0000N.safetensors ... and
// model.safetensors.index.json. Tensors are assigned to shards in the order given, by
// huggingface_hub's split_state_dict_into_shards_factory: a tensor bigger than the limit
// gets a shard of its own, and a shard is closed when the next tensor would tip it over
// the limit (so pass ts in the model's state_dict order). Every shard carries metadata.
// The index is {"metadata":{"total_size":N},"weight_map":{...}} as Python's
// json.dumps(indent=2, sort_keys=True) + "\n" writes it.
//
// Each file is written atomically; then weight files of an earlier save that the new one
// does not use (model.safetensors, the index, model-*-of-*.safetensors) are removed, as
// save_pretrained does, so that a loader cannot pick up a stale file. The directory as a
// whole is not replaced atomically: a caller that needs that writes a fresh directory and
// renames it. It returns the paths written, shards first and the index last.
func WriteDir(dir string, ts []Tensor, maxShardBytes int64, metadata map[string]string) (files []string, err error) {
	sizes, err := checkTensors(dir, ts)
	if err != nil {
		return nil, err
	}
	shards, total := planShards(sizes, maxShardBytes)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, &Error{File: dir, Err: err}
	}
	names := make([]string, len(shards))
	for i := range shards {
		names[i] = SingleName
		if len(shards) > 1 {
			names[i] = fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(shards))
		}
	}
	weightMap := map[string]string{}
	for i, shard := range shards {
		part := make([]Tensor, len(shard))
		for j, k := range shard {
			part[j] = ts[k]
			weightMap[ts[k].Name] = names[i]
		}
		path := filepath.Join(dir, names[i])
		if err := writeFile(path, part, metadata); err != nil {
			return files, err
		}
		files = append(files, path)
	}
	keep := map[string]bool{}
	for _, n := range names {
		keep[n] = true
	}
	if len(shards) > 1 {
		path := filepath.Join(dir, IndexName)
		idx := indexJSON(total, weightMap)
		if err := writeAtomic(path, func(w io.Writer) error { _, err := w.Write(idx); return err }); err != nil {
			return files, err
		}
		files = append(files, path)
		keep[IndexName] = true
	}
	if err := removeStale(dir, keep); err != nil {
		return files, err
	}
	return files, nil
}

// planShards assigns tensors (by their byte sizes, in order) to shards as
// huggingface_hub's split_state_dict_into_shards_factory does; a single shard when
// maxShardBytes <= 0. It returns the shards' tensor indices and the total size.
func planShards(sizes []int64, maxShardBytes int64) ([][]int, int64) {
	var total int64
	for _, s := range sizes {
		total += s
	}
	if maxShardBytes <= 0 || len(sizes) == 0 {
		all := make([]int, len(sizes))
		for i := range all {
			all[i] = i
		}
		return [][]int{all}, total
	}
	var shards [][]int
	var cur []int
	var curSize int64
	for i, s := range sizes {
		if s > maxShardBytes {
			shards = append(shards, []int{i})
			continue
		}
		if curSize+s > maxShardBytes {
			shards = append(shards, cur)
			cur, curSize = nil, 0
		}
		cur = append(cur, i)
		curSize += s
	}
	if len(cur) > 0 {
		shards = append(shards, cur)
	}
	return shards, total
}

// indexJSON renders the index as Python's json.dumps(index, indent=2, sort_keys=True)
// followed by a newline, which is what transformers' save_pretrained writes.
func indexJSON(total int64, weightMap map[string]string) []byte {
	names := make([]string, 0, len(weightMap))
	for n := range weightMap {
		names = append(names, n)
	}
	sort.Strings(names) // Python sorts str by code point; UTF-8 byte order is the same
	b := []byte("{\n  \"metadata\": {\n    \"total_size\": ")
	b = strconv.AppendInt(b, total, 10)
	b = append(b, "\n  },\n  \"weight_map\": {"...)
	for i, n := range names {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, "\n    "...)
		b = appendPyString(b, n)
		b = append(b, ": "...)
		b = appendPyString(b, weightMap[n])
	}
	if len(names) > 0 {
		b = append(b, "\n  "...)
	}
	b = append(b, "}\n}\n"...)
	return b
}

// appendPyString appends s quoted as Python's json.dumps does with ensure_ascii: '"',
// '\\', \n \r \t \b \f escaped by name, every other character outside ' '..'~' as \uxxxx
// (lower-case hex, UTF-16 surrogate pairs above the BMP).
func appendPyString(b []byte, s string) []byte { return jsonstr.AppendASCII(b, s) }

// removeStale removes weight files of an earlier save in dir that keep does not name.
func removeStale(dir string, keep map[string]bool) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return &Error{File: dir, Err: err}
	}
	removed := false
	for _, e := range entries {
		n := e.Name()
		if keep[n] || e.IsDir() || !(n == SingleName || n == IndexName || shardName.MatchString(n)) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return &Error{File: filepath.Join(dir, n), Err: err, Detail: "removing a stale weight file"}
		}
		removed = true
	}
	if removed {
		if err := syncDir(dir); err != nil {
			return &Error{File: dir, Err: err, Detail: "syncing the directory"}
		}
	}
	return nil
}
