package hub

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// How a model was found (Resolution.Kind).
const (
	KindPath     = "path"     // a local directory named by the caller
	KindCache    = "hf-cache" // a snapshot already complete in the Hugging Face cache
	KindDownload = "download" // at least one file fetched from the Hub just now
)

// The files of a model in Hugging Face layout.
const (
	ConfigFile     = "config.json"
	WeightsFile    = "model.safetensors"
	WeightsIndex   = "model.safetensors.index.json"
	NativeWeights  = "consolidated.safetensors" // Mistral's own names and RoPE layout: refused
	maxIndexBytes  = 64 << 20                   // Mistral-7B's index is 24 KB
	maxConfigBytes = 16 << 20
)

// Resolution is where a model's files are.
type Resolution struct {
	Dir    string // folder holding config.json and the weights (a snapshot, or the directory given)
	Repo   string // "org/name"; "" for a local directory
	Rev    string // the revision asked for ("main" unless "@rev"); "" for a local directory
	Commit string // the snapshot's name (a commit hash); "" for a local directory
	Kind   string // KindPath, KindCache or KindDownload
	// NoWeights: Dir holds config.json but no weights, so the trainer starts from random
	// weights. For a repo only when offline or when the Hub has no weights for it.
	NoWeights bool
	// Index is WeightsIndex when the weights are sharded, else "".
	Index string
	// Weights are the weight files, relative to Dir: WeightsFile, or every shard the index's
	// weight_map names, sorted. Empty when NoWeights.
	Weights []string
	// Notes say why the resolution is what it is (offline, no weights on the Hub), for people.
	Notes []string
}

// ResolveModel finds a model in Hugging Face layout: config.json plus model.safetensors, or
// model.safetensors.index.json and every shard its weight_map names.
//
// spec is a local directory or a repo id "org/name[@rev]". A repo is looked up in the cache
// (Client.Snapshot); when a file is missing and the network may be used, the missing files are
// downloaded into the cache at one commit: config.json, then the index (a 404 there means a
// single model.safetensors), then the shards. A snapshot with config.json and no weights is
// returned with NoWeights only when offline (with a note) or when the Hub has neither
// weights file; an index whose shards are missing offline is ErrIncomplete.
//
// Errors are *Error wrapping ErrBadRepo, ErrNotCached, ErrNotFound, ErrUnauthorized (a gated
// repo: the reason says HF_TOKEN), ErrDownload, ErrNoCache, ErrIncomplete, ErrBadIndex or
// ErrNoModel.
func ResolveModel(spec string, opt Options) (Resolution, error) {
	if st, err := os.Stat(spec); err == nil {
		if !st.IsDir() {
			return Resolution{}, &Error{Kind: ErrNoModel, Repo: spec, Reason: "not a directory"}
		}
		return resolveDir(spec)
	} else if !errors.Is(err, os.ErrNotExist) {
		return Resolution{}, &Error{Kind: ErrNoModel, Repo: spec, Err: err}
	}
	repo, err := ParseRepo(spec)
	if err != nil {
		return Resolution{}, &Error{Kind: ErrBadRepo, Repo: spec, Reason: "no such directory, and not org/name[@revision]"}
	}
	return New(opt).ResolveModel(repo)
}

func resolveDir(dir string) (Resolution, error) {
	m := inspectModel(dir)
	res := Resolution{Dir: dir, Kind: KindPath, Index: m.index, Weights: m.weights}
	if err := m.problem(dir); err != nil {
		return Resolution{}, err
	}
	res.NoWeights = len(m.weights) == 0
	if res.NoWeights {
		res.Notes = append(res.Notes, dir+": config.json only, no weights: random initialisation")
	}
	return res, nil
}

// ResolveModel is the package-level ResolveModel for a parsed repo id.
func (c *Client) ResolveModel(repo Repo) (Resolution, error) {
	res := Resolution{Repo: repo.ID, Rev: repo.Rev, Kind: KindCache}
	name := repo.ID + "@" + repo.Rev
	if c.cacheDir == "" {
		return Resolution{}, &Error{Kind: ErrNoCache, Repo: name, Reason: "set HF_HUB_CACHE or HF_HOME"}
	}
	complete := func(d string) bool {
		m := inspectModel(d)
		return m.config && len(m.weights) > 0 && len(m.missing) == 0 && m.err == nil
	}
	if dir, commit := c.Snapshot(repo, complete); dir != "" {
		return c.finish(res, dir, commit)
	}
	dir, commit := c.Snapshot(repo, func(d string) bool { return IsFile(filepath.Join(d, ConfigFile)) })
	if c.offline {
		if dir == "" {
			return Resolution{}, &Error{Kind: ErrNotCached, Repo: name, File: ConfigFile,
				Reason: fmt.Sprintf("offline; cache %s", c.cacheDir)}
		}
		m := inspectModel(dir)
		if len(m.missing) > 0 {
			return Resolution{}, &Error{Kind: ErrIncomplete, Repo: name, File: m.missing[0],
				Reason: fmt.Sprintf("offline, and %d of %d shards are not in %s", len(m.missing), len(m.weights), dir)}
		}
		res.Notes = append(res.Notes, fmt.Sprintf("%s: offline and no weights in the cache: random initialisation", name))
		return c.finish(res, dir, commit)
	}

	// Online: fetch what is missing, all from one commit.
	res.Kind = KindDownload
	if dir == "" {
		f, err := c.Download(repo, ConfigFile, DownloadOptions{MaxBytes: maxConfigBytes, Check: checkJSON})
		if err != nil {
			return Resolution{}, err
		}
		commit = f.Commit
		dir = filepath.Dir(f.Path)
	}
	pin := DownloadOptions{Snapshot: commit}
	if !IsFile(filepath.Join(dir, WeightsIndex)) {
		_, err := c.Download(repo, WeightsIndex, DownloadOptions{Snapshot: commit, MaxBytes: maxIndexBytes,
			Check: func(p string) error { _, err := ReadIndex(p); return err }})
		if errors.Is(err, ErrNotFound) {
			_, err = c.Download(repo, WeightsFile, pin)
			if errors.Is(err, ErrNotFound) {
				res.Notes = append(res.Notes, fmt.Sprintf("%s: the Hub has neither %s nor %s: random initialisation", name, WeightsIndex, WeightsFile))
				return c.finish(res, dir, commit)
			}
		}
		if err != nil {
			return Resolution{}, err
		}
	}
	m := inspectModel(dir)
	if m.err != nil {
		return Resolution{}, m.problem(dir)
	}
	for _, shard := range m.missing {
		if _, err := c.Download(repo, shard, pin); err != nil {
			return Resolution{}, err
		}
	}
	return c.finish(res, dir, commit)
}

// finish checks dir once more (a file may have vanished, or a download may not have produced
// a complete model) and fills the resolution from what is there.
func (c *Client) finish(res Resolution, dir, commit string) (Resolution, error) {
	m := inspectModel(dir)
	if err := m.problem(dir); err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.Repo = res.Repo + "@" + res.Rev
		}
		return Resolution{}, err
	}
	res.Dir, res.Commit, res.Index, res.Weights = dir, commit, m.index, m.weights
	res.NoWeights = len(m.weights) == 0
	return res, nil
}

// modelFiles is what a folder holds of a model.
type modelFiles struct {
	config  bool
	index   string   // WeightsIndex when weights come from it
	weights []string // weight files (present or not)
	missing []string // weights not present
	native  bool     // consolidated.safetensors and no Hugging Face weights
	err     error    // the index does not parse
}

// inspectModel follows transformers' order: model.safetensors, else the index.
func inspectModel(dir string) modelFiles {
	m := modelFiles{config: IsFile(filepath.Join(dir, ConfigFile))}
	switch {
	case IsFile(filepath.Join(dir, WeightsFile)):
		m.weights = []string{WeightsFile}
	case IsFile(filepath.Join(dir, WeightsIndex)):
		m.index = WeightsIndex
		m.weights, m.err = ReadIndex(filepath.Join(dir, WeightsIndex))
		for _, w := range m.weights {
			if !IsFile(filepath.Join(dir, w)) {
				m.missing = append(m.missing, w)
			}
		}
	default:
		m.native = IsFile(filepath.Join(dir, NativeWeights))
	}
	return m
}

// problem is the error a folder's state makes for the trainer, nil when it can be used.
func (m modelFiles) problem(dir string) error {
	switch {
	case !m.config:
		return &Error{Kind: ErrNoModel, Repo: dir, File: ConfigFile, Reason: "missing"}
	case m.err != nil:
		return m.err
	case len(m.missing) > 0:
		return &Error{Kind: ErrIncomplete, Repo: dir, File: m.missing[0],
			Reason: fmt.Sprintf("%d of %d shards named by %s are missing: %s", len(m.missing), len(m.weights), WeightsIndex, strings.Join(m.missing, ", "))}
	case m.native:
		return &Error{Kind: ErrNoModel, Repo: dir, File: NativeWeights,
			Reason: "only Mistral's native checkpoint (its own tensor names and interleaved RoPE); use the Hugging Face layout: model.safetensors or model-0000N-of-0000M.safetensors with " + WeightsIndex}
	}
	return nil
}

// ReadIndex reads a model.safetensors.index.json and returns the shard files its weight_map
// names, sorted and without repeats. Each must be a plain file name ending in .safetensors.
func ReadIndex(path string) ([]string, error) {
	bad := func(reason string, err error) error {
		return &Error{Kind: ErrBadIndex, Repo: filepath.Dir(path), File: filepath.Base(path), Reason: reason, Err: err}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, bad("", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxIndexBytes+1))
	if err != nil {
		return nil, bad("", err)
	}
	if len(b) > maxIndexBytes {
		return nil, bad(fmt.Sprintf("larger than %d bytes", maxIndexBytes), nil)
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, bad("", err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, bad("weight_map is empty or missing", nil)
	}
	var files []string
	for tensor, file := range idx.WeightMap {
		if !safeName(file) || !strings.HasSuffix(file, ".safetensors") {
			return nil, bad(fmt.Sprintf("tensor %q: shard %q is not a .safetensors file name", tensor, file), nil)
		}
		files = append(files, file)
	}
	slices.Sort(files)
	return slices.Compact(files), nil
}

// checkJSON keeps an error page served with status 200 out of the cache.
func checkJSON(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if !json.Valid(b) {
		return errors.New("not JSON")
	}
	return nil
}
