package train

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unsafe"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/dtypes/bfloat16"
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"

	"github.com/ktoloader/ktoloader/internal/safetensors"
)

// ModelSource is what --model names: the model's shape and, when the directory holds them,
// its pretrained weights.
type ModelSource struct {
	Config ModelConfig
	// Dir holds config.json and the safetensors files ("" for the tiny preset or a bare
	// config.json path).
	Dir string
	// Weights: Dir holds model.safetensors or a sharded index; otherwise the model starts
	// from random weights drawn from the seed.
	Weights bool
	// Fingerprint identifies the weights for the reference cache: the sha256 of every
	// weight file's name, size and header (the header hashes every tensor's place, shape and
	// dtype; reading 14.5 GB to hash the data would take longer than the reference pass).
	Fingerprint string
	// Repo is the Hugging Face repo id the directory was resolved from, if any.
	Repo string
}

// ResolveRepo, when set, resolves a Hugging Face repo id ("org/name[@rev]") to a local
// snapshot directory (downloading into the cache unless offline). The command sets it, so
// that this package does not carry an HTTP client.
var ResolveRepo func(spec string, offline bool, status func(string)) (dir string, err error)

// isRepoID reports whether spec looks like "org/name[@rev]" and is not a local path.
func isRepoID(spec string) bool {
	if _, err := os.Stat(spec); err == nil {
		return false
	}
	name, _, _ := strings.Cut(spec, "@")
	org, repo, ok := strings.Cut(name, "/")
	return ok && org != "" && repo != "" && !strings.ContainsAny(repo, "/\\") &&
		!strings.HasPrefix(spec, ".") && !strings.HasPrefix(spec, "/")
}

// ResolveModel finds the model --model names: the tiny preset sized to vocab and maxLen, a
// config.json path, a directory (with or without weights) or a repo id.
func ResolveModel(spec string, vocab, maxLen int, offline bool, status func(string)) (ModelSource, error) {
	if spec == "" || spec == TinyPreset {
		c := TinyConfig(vocab, maxLen)
		return ModelSource{Config: c}, c.Validate()
	}
	path := spec
	var src ModelSource
	if isRepoID(spec) {
		if ResolveRepo == nil {
			return src, fmt.Errorf("%w: %q is not a file or directory, and no Hub resolver is set", ErrBadModelConfig, spec)
		}
		dir, err := ResolveRepo(spec, offline, status)
		if err != nil {
			return src, err
		}
		src.Repo, path = spec, dir
	}
	st, err := os.Stat(path)
	if err != nil {
		return src, fmt.Errorf("%w: --model %s: %v", ErrBadModelConfig, spec, err)
	}
	if st.IsDir() {
		src.Dir = path
		path = filepath.Join(path, "config.json")
	}
	if src.Config, err = LoadModelConfig(path); err != nil {
		return src, err
	}
	if src.Dir == "" {
		return src, nil
	}
	// OpenDir refuses Mistral's native consolidated.safetensors (other names, interleaved
	// RoPE) rather than letting the run silently train random weights.
	d, err := safetensors.OpenDir(src.Dir)
	if errors.Is(err, safetensors.ErrNoWeights) {
		return src, nil
	}
	if err != nil {
		return src, err
	}
	defer d.Close()
	src.Weights, src.Fingerprint = true, d.Fingerprint()
	return src, nil
}

// ErrWeights marks pretrained weights that do not fit the model config.
var ErrWeights = errors.New("weights do not match the model")

// ignoredTensors are buffers some checkpoints carry that the model recomputes.
func ignoredTensor(name string) bool { return strings.HasSuffix(name, ".rotary_emb.inv_freq") }

// checkWeights compares every tensor the config expects with the files, by name, shape and
// dtype, before anything is allocated: missing, extra and misshapen tensors are all listed
// (up to a few of each), naming the file.
func (c ModelConfig) checkWeights(d *safetensors.Dir) error {
	want := map[string][]int{}
	for _, spec := range c.variables() {
		want[hfName(spec.scope)] = spec.dims
	}
	var problems []string
	add := func(format string, args ...any) {
		if len(problems) < 8 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		info, f, ok := d.Info(name)
		if !ok {
			add("tensor %s missing", name)
			continue
		}
		if !slices.Equal(info.Shape, want[name]) {
			add("%s: tensor %s has shape %v, the config wants %v", f.Path, name, info.Shape, want[name])
		}
		if info.DType != safetensors.F32 && info.DType != safetensors.BF16 {
			add("%s: tensor %s has dtype %s (F32 and BF16 are supported)", f.Path, name, info.DType)
		}
	}
	for _, name := range d.Names() {
		if _, ok := want[name]; !ok && !ignoredTensor(name) {
			_, f, _ := d.Info(name)
			add("%s: tensor %s is not part of a Mistral model with this config", f.Path, name)
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s: %s", ErrWeights, d.Path, strings.Join(problems, "; "))
	}
	return nil
}

// LoadWeights creates the model's weight variables in ctx from the safetensors files in dir,
// in dtype, after checkWeights. Each tensor is handed to the backend straight from the
// mapped file when the dtypes agree (the backend's buffer is the only copy), or converted
// into one new buffer; the mapping is closed at the end, so the host never holds two copies
// of the model. Variables that already exist (a checkpoint) keep their values.
func (c ModelConfig) LoadWeights(ctx *context.Context, backend backends.Backend, dir string, dtype dtypes.DType) error {
	d, err := safetensors.OpenDir(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := c.checkWeights(d); err != nil {
		return err
	}
	ctx = ctx.Checked(false)
	for _, spec := range c.variables() {
		vctx := ctx.InAbsPath(spec.scope)
		if vctx.GetVariable(weightName) != nil {
			continue
		}
		name := hfName(spec.scope)
		info, f, _ := d.Info(name)
		data, err := d.Data(name)
		if err != nil {
			return err
		}
		t, err := tensorFromBytes(backend, data, info.DType, dtype, spec.dims)
		if err != nil {
			return fmt.Errorf("%s: tensor %s: %w", f.Path, name, err)
		}
		vctx.VariableWithValue(weightName, t)
	}
	return nil
}

// tensorFromBytes makes a tensor of dtype want and dims from little-endian data of dtype have.
func tensorFromBytes(backend backends.Backend, data []byte, have safetensors.DType, want dtypes.DType, dims []int) (*tensors.Tensor, error) {
	n := 1
	for _, d := range dims {
		n *= d
	}
	if n == 0 {
		return tensors.FromShape(shapes.Make(want, dims...)), nil
	}
	var flat any
	switch {
	case have == safetensors.F32 && want == dtypes.Float32:
		flat = viewOrCopy[float32](data, n)
	case have == safetensors.BF16 && want == dtypes.BFloat16:
		flat = viewOrCopy[bfloat16.BFloat16](data, n)
	case have == safetensors.BF16 && want == dtypes.Float32:
		src := viewOrCopy[uint16](data, n)
		out := make([]float32, n)
		for i, b := range src {
			out[i] = safetensors.Float32FromBF16(b)
		}
		flat = out
	case have == safetensors.F32 && want == dtypes.BFloat16:
		src := viewOrCopy[float32](data, n)
		out := make([]bfloat16.BFloat16, n)
		for i, f := range src {
			out[i] = bfloat16.FromBits(safetensors.BF16FromFloat32(f))
		}
		flat = out
	default:
		return nil, fmt.Errorf("%w: cannot load %s as %s", ErrWeights, have, want)
	}
	buf, err := backend.BufferFromFlatData(0, flat, shapes.Make(want, dims...))
	if err != nil {
		return nil, err
	}
	return tensors.FromBuffer(backend, buf)
}

// viewOrCopy reinterprets n little-endian values in data as []T without copying when data
// is aligned for T (safetensors data offsets usually are), else copies.
func viewOrCopy[T float32 | uint16 | bfloat16.BFloat16](data []byte, n int) []T {
	var zero T
	size := int(unsafe.Sizeof(zero))
	if uintptr(unsafe.Pointer(&data[0]))%uintptr(size) == 0 {
		return unsafe.Slice((*T)(unsafe.Pointer(&data[0])), n)
	}
	out := make([]T, n)
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&out[0])), n*size), data[:n*size])
	return out
}
