package hub

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const (
	commitB  = "b2c3d4e5f60718293a4b5c6d7e8f901234567890"
	shard1   = "model-00001-of-00002.safetensors"
	shard2   = "model-00002-of-00002.safetensors"
	indexTwo = `{"metadata":{"total_size":8},"weight_map":{"lm_head.weight":"` + shard2 + `","model.embed_tokens.weight":"` + shard1 + `","model.norm.weight":"` + shard2 + `"}}`
)

func shardedFiles() map[string][]byte {
	return map[string][]byte{
		ConfigFile:   []byte(`{"model_type":"mistral","hidden_size":64}`),
		WeightsIndex: []byte(indexTwo),
		shard1:       bytes.Repeat([]byte{1}, 70_000),
		shard2:       bytes.Repeat([]byte{2}, 90_000),
	}
}

func singleFiles() map[string][]byte {
	return map[string][]byte{
		ConfigFile:  []byte(`{"model_type":"mistral"}`),
		WeightsFile: bytes.Repeat([]byte{3}, 50_000),
		// Mistral's repos also hold their native checkpoint; it is never fetched.
		NativeWeights: []byte("native"),
	}
}

func cacheModel(t *testing.T, cache, repo, commit string, files map[string][]byte) string {
	t.Helper()
	for name, b := range files {
		cacheFile(t, cache, repo, commit, name, b)
	}
	return filepath.Join(cache, "models--"+strings.ReplaceAll(repo, "/", "--"), "snapshots", commit)
}

func TestResolveModelOfflineHit(t *testing.T) {
	cache := t.TempDir()
	sharded := cacheModel(t, cache, "acme/sharded", commitA, shardedFiles())
	cacheRef(t, cache, "acme/sharded", "main", commitA)
	single := cacheModel(t, cache, "acme/single", commitB, singleFiles())
	cacheRef(t, cache, "acme/single", "main", commitB)
	for _, tc := range []struct {
		spec string
		want Resolution
	}{
		{"acme/sharded", Resolution{Dir: sharded, Repo: "acme/sharded", Rev: "main", Commit: commitA, Kind: KindCache, Index: WeightsIndex, Weights: []string{shard1, shard2}}},
		{"acme/single", Resolution{Dir: single, Repo: "acme/single", Rev: "main", Commit: commitB, Kind: KindCache, Weights: []string{WeightsFile}}},
		{sharded, Resolution{Dir: sharded, Kind: KindPath, Index: WeightsIndex, Weights: []string{shard1, shard2}}},
	} {
		// HF_ENDPOINT points nowhere: an offline hit must not need it.
		got, err := ResolveModel(tc.spec, Options{Getenv: env(map[string]string{"HF_HUB_CACHE": cache, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:1"})})
		if err != nil {
			t.Fatalf("%s: %v", tc.spec, err)
		}
		if !sameResolution(got, tc.want) {
			t.Errorf("%s:\n got  %+v\n want %+v", tc.spec, got, tc.want)
		}
	}
}

func sameResolution(a, b Resolution) bool {
	return a.Dir == b.Dir && a.Repo == b.Repo && a.Rev == b.Rev && a.Commit == b.Commit && a.Kind == b.Kind &&
		a.NoWeights == b.NoWeights && a.Index == b.Index && slices.Equal(a.Weights, b.Weights)
}

// refs/REV names the snapshot; a commit revision names it directly; neither falls back to
// another snapshot.
func TestResolveModelRevisions(t *testing.T) {
	cache := t.TempDir()
	dirA := cacheModel(t, cache, "acme/m", commitA, singleFiles())
	dirB := cacheModel(t, cache, "acme/m", commitB, shardedFiles())
	cacheRef(t, cache, "acme/m", "main", commitB)
	cacheRef(t, cache, "acme/m", "v1.0", commitA)
	offline := Options{Getenv: env(map[string]string{"HF_HUB_CACHE": cache}), Offline: true}
	for spec, want := range map[string]string{
		"acme/m":            dirB,
		"acme/m@main":       dirB,
		"acme/m@v1.0":       dirA,
		"acme/m@" + commitA: dirA,
		"acme/m@" + commitB: dirB,
	} {
		res, err := ResolveModel(spec, offline)
		if err != nil || res.Dir != want || res.Kind != KindCache {
			t.Errorf("%s: %+v, %v; want %s", spec, res, err, want)
		}
	}
	for _, spec := range []string{"acme/m@v2", "acme/m@0000000000000000000000000000000000000000"} {
		if _, err := ResolveModel(spec, offline); !errors.Is(err, ErrNotCached) || !strings.Contains(err.Error(), spec) {
			t.Errorf("%s: err = %v, want ErrNotCached naming it", spec, err)
		}
	}
}

// Nothing cached: config.json at the revision, then the index and the shards at the commit
// the Hub named, stored as huggingface_hub would; the next run needs no network.
func TestResolveModelShardedDownload(t *testing.T) {
	files := shardedFiles()
	files[NativeWeights] = []byte("never fetched")
	h := newFakeHub(t, "acme/m", commitA, files)
	cache := t.TempDir()
	vars := map[string]string{"HF_ENDPOINT": h.URL, "HF_HUB_CACHE": cache}
	res, err := ResolveModel("acme/m", Options{Getenv: env(vars)})
	if err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(cache, "models--acme--m", "snapshots", commitA)
	want := Resolution{Dir: snap, Repo: "acme/m", Rev: "main", Commit: commitA, Kind: KindDownload, Index: WeightsIndex, Weights: []string{shard1, shard2}}
	if !sameResolution(res, want) {
		t.Errorf("\n got  %+v\n want %+v", res, want)
	}
	wantReq := []string{"main/" + ConfigFile, commitA + "/" + WeightsIndex, commitA + "/" + shard1, commitA + "/" + shard2}
	if got := h.requested(); !slices.Equal(got, wantReq) {
		t.Errorf("requests %q, want %q", got, wantReq)
	}
	for _, name := range []string{ConfigFile, WeightsIndex, shard1, shard2} {
		if !bytes.Equal(readFile(t, filepath.Join(snap, name)), files[name]) {
			t.Errorf("%s differs", name)
		}
	}
	if got := string(readFile(t, filepath.Join(cache, "models--acme--m", "refs", "main"))); got != commitA {
		t.Errorf("refs/main = %q", got)
	}
	h.Close()
	again, err := ResolveModel("acme/m", Options{Getenv: env(vars)})
	want.Kind = KindCache
	if err != nil || !sameResolution(again, want) {
		t.Errorf("rerun without the Hub: %+v, %v", again, err)
	}
}

// A 404 for the index means one model.safetensors.
func TestResolveModelSingleFileFallback(t *testing.T) {
	h := newFakeHub(t, "acme/m", commitA, singleFiles())
	h.refs["v1"] = commitA
	cache := t.TempDir()
	res, err := ResolveModel("acme/m@v1", Options{Getenv: env(map[string]string{"HF_ENDPOINT": h.URL, "HF_HUB_CACHE": cache})})
	if err != nil {
		t.Fatal(err)
	}
	if res.Index != "" || !slices.Equal(res.Weights, []string{WeightsFile}) || res.Commit != commitA || res.Rev != "v1" || res.NoWeights {
		t.Errorf("res %+v", res)
	}
	wantReq := []string{"v1/" + ConfigFile, commitA + "/" + WeightsIndex, commitA + "/" + WeightsFile}
	if got := h.requested(); !slices.Equal(got, wantReq) {
		t.Errorf("requests %q, want %q", got, wantReq)
	}
	if got := string(readFile(t, filepath.Join(cache, "models--acme--m", "refs", "v1"))); got != commitA {
		t.Errorf("refs/v1 = %q", got)
	}
}

// A commit revision is fetched by that commit and writes no refs/.
func TestResolveModelCommitDownload(t *testing.T) {
	h := newFakeHub(t, "acme/m", commitA, singleFiles())
	cache := t.TempDir()
	res, err := ResolveModel("acme/m@"+commitA, Options{Getenv: env(map[string]string{"HF_ENDPOINT": h.URL, "HF_HUB_CACHE": cache})})
	if err != nil || res.Commit != commitA || res.Rev != commitA {
		t.Fatalf("res %+v, err %v", res, err)
	}
	for _, r := range h.requested() {
		if !strings.HasPrefix(r, commitA+"/") {
			t.Errorf("request %q not by commit", r)
		}
	}
	if _, err := os.Stat(filepath.Join(cache, "models--acme--m", "refs")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refs/ written for a commit revision: %v", err)
	}
}

// A snapshot that lacks shards gets exactly the missing ones, from its own commit, even when
// the branch has moved on since.
func TestResolveModelCompletesPartialSnapshot(t *testing.T) {
	files := shardedFiles()
	cache := t.TempDir()
	cacheModel(t, cache, "acme/m", commitA, map[string][]byte{ConfigFile: files[ConfigFile], WeightsIndex: files[WeightsIndex], shard1: files[shard1]})
	cacheRef(t, cache, "acme/m", "main", commitA)
	h := newFakeHub(t, "acme/m", commitB, files) // main is at commitB now
	h.refs[commitA] = commitA
	opts := Options{Getenv: env(map[string]string{"HF_ENDPOINT": h.URL, "HF_HUB_CACHE": cache})}

	_, err := ResolveModel("acme/m", Options{Getenv: opts.Getenv, Offline: true})
	if !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), shard2) {
		t.Errorf("offline: err = %v, want ErrIncomplete naming %s", err, shard2)
	}
	res, err := ResolveModel("acme/m", opts)
	if err != nil || res.Commit != commitA || res.Kind != KindDownload {
		t.Fatalf("res %+v, err %v", res, err)
	}
	if got := h.requested(); !slices.Equal(got, []string{commitA + "/" + shard2}) {
		t.Errorf("requests %q, want only the missing shard at the snapshot's commit", got)
	}
}

// A truncated shard leaves no file in the snapshot and no temporary file; a rerun fetches
// only what is still missing.
func TestResolveModelTruncatedShard(t *testing.T) {
	files := shardedFiles()
	h := newFakeHub(t, "acme/m", commitA, files)
	h.truncate[shard2] = 1000
	cache := t.TempDir()
	opts := Options{Getenv: env(map[string]string{"HF_ENDPOINT": h.URL, "HF_HUB_CACHE": cache})}
	_, err := ResolveModel("acme/m", opts)
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, ErrDownload) || e.File != shard2 || e.Repo != "acme/m@main" {
		t.Fatalf("err = %v, want an ErrDownload naming acme/m@main and %s", err, shard2)
	}
	snap := filepath.Join(cache, "models--acme--m", "snapshots", commitA)
	if _, err := os.Lstat(filepath.Join(snap, shard2)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("truncated shard present in the snapshot: %v", err)
	}
	if tmp := tempFiles(t, cache); len(tmp) != 0 {
		t.Errorf("temporary files left: %v", tmp)
	}
	h.set(func(h *fakeHub) { delete(h.truncate, shard2); h.requests = nil })
	res, err := ResolveModel("acme/m", opts)
	if err != nil || !slices.Equal(res.Weights, []string{shard1, shard2}) {
		t.Fatalf("rerun: %+v, %v", res, err)
	}
	if got := h.requested(); !slices.Equal(got, []string{commitA + "/" + shard2}) {
		t.Errorf("rerun requests %q", got)
	}
	if !bytes.Equal(readFile(t, filepath.Join(snap, shard2)), files[shard2]) {
		t.Error("shard content differs")
	}
}

func TestResolveModelGated(t *testing.T) {
	h := newFakeHub(t, "mistralai/Mistral-7B-v0.3", commitA, singleFiles())
	h.status = 401
	cache := t.TempDir()
	_, err := ResolveModel("mistralai/Mistral-7B-v0.3", Options{Getenv: env(map[string]string{"HF_ENDPOINT": h.URL, "HF_HUB_CACHE": cache})})
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, ErrUnauthorized) || e.File != ConfigFile || !strings.Contains(err.Error(), "HF_TOKEN") ||
		!strings.Contains(err.Error(), "mistralai/Mistral-7B-v0.3@main") {
		t.Fatalf("err = %v, want ErrUnauthorized naming the repo, config.json and HF_TOKEN", err)
	}
	if entries, _ := os.ReadDir(cache); len(entries) != 0 {
		t.Errorf("cache holds %d entries", len(entries))
	}
}

// config.json only: random init, but only when offline or when the Hub has no weights.
func TestResolveModelNoWeights(t *testing.T) {
	config := map[string][]byte{ConfigFile: []byte(`{"model_type":"mistral"}`)}
	t.Run("Hub has none", func(t *testing.T) {
		h := newFakeHub(t, "acme/cfg", commitA, config)
		res, err := ResolveModel("acme/cfg", Options{Getenv: env(map[string]string{"HF_ENDPOINT": h.URL, "HF_HUB_CACHE": t.TempDir()})})
		if err != nil || !res.NoWeights || len(res.Weights) != 0 || len(res.Notes) != 1 || !strings.Contains(res.Notes[0], "neither") {
			t.Fatalf("res %+v, err %v", res, err)
		}
		if got := h.requested(); len(got) != 3 {
			t.Errorf("requests %q, want config, index, single file", got)
		}
	})
	t.Run("offline", func(t *testing.T) {
		cache := t.TempDir()
		dir := cacheModel(t, cache, "acme/cfg", commitA, config)
		res, err := ResolveModel("acme/cfg", Options{Getenv: env(map[string]string{"HF_HUB_CACHE": cache}), Offline: true})
		if err != nil || !res.NoWeights || res.Dir != dir || len(res.Notes) != 1 || !strings.Contains(res.Notes[0], "offline") {
			t.Fatalf("res %+v, err %v", res, err)
		}
	})
	t.Run("online fetches the weights instead", func(t *testing.T) {
		cache := t.TempDir()
		cacheModel(t, cache, "acme/m", commitA, config)
		cacheRef(t, cache, "acme/m", "main", commitA)
		h := newFakeHub(t, "acme/m", commitA, singleFiles())
		res, err := ResolveModel("acme/m", Options{Getenv: env(map[string]string{"HF_ENDPOINT": h.URL, "HF_HUB_CACHE": cache})})
		if err != nil || res.NoWeights || !slices.Equal(res.Weights, []string{WeightsFile}) {
			t.Fatalf("res %+v, err %v", res, err)
		}
	})
	t.Run("offline, nothing cached", func(t *testing.T) {
		_, err := ResolveModel("acme/none", Options{Getenv: env(map[string]string{"HF_HUB_CACHE": t.TempDir()}), Offline: true})
		if !errors.Is(err, ErrNotCached) {
			t.Fatalf("err = %v", err)
		}
	})
}

// A malformed index served with status 200 stays out of the cache.
func TestResolveModelBadIndexDownload(t *testing.T) {
	files := shardedFiles()
	files[WeightsIndex] = []byte(`{"weight_map":{"w":"../../etc/passwd.safetensors"}}`)
	h := newFakeHub(t, "acme/m", commitA, files)
	cache := t.TempDir()
	_, err := ResolveModel("acme/m", Options{Getenv: env(map[string]string{"HF_ENDPOINT": h.URL, "HF_HUB_CACHE": cache})})
	if !errors.Is(err, ErrBadIndex) || !errors.Is(err, ErrDownload) {
		t.Fatalf("err = %v", err)
	}
	if IsFile(filepath.Join(cache, "models--acme--m", "snapshots", commitA, WeightsIndex)) {
		t.Error("bad index stored")
	}
}

func TestResolveModelLocalDir(t *testing.T) {
	write := func(files map[string][]byte) string {
		dir := t.TempDir()
		for name, b := range files {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	all := shardedFiles()
	missing := shardedFiles()
	delete(missing, shard2)
	for _, tc := range []struct {
		name  string
		files map[string][]byte
		want  error
		file  string
	}{
		{"no config", map[string][]byte{WeightsFile: []byte("w")}, ErrNoModel, ConfigFile},
		{"missing shard", missing, ErrIncomplete, shard2},
		{"native only", map[string][]byte{ConfigFile: []byte("{}"), NativeWeights: []byte("w")}, ErrNoModel, NativeWeights},
		{"shard outside", map[string][]byte{ConfigFile: []byte("{}"), WeightsIndex: []byte(`{"weight_map":{"w":"../x.safetensors"}}`)}, ErrBadIndex, WeightsIndex},
		{"empty map", map[string][]byte{ConfigFile: []byte("{}"), WeightsIndex: []byte(`{"weight_map":{}}`)}, ErrBadIndex, WeightsIndex},
		{"not json", map[string][]byte{ConfigFile: []byte("{}"), WeightsIndex: []byte(`<html>`)}, ErrBadIndex, WeightsIndex},
	} {
		dir := write(tc.files)
		_, err := ResolveModel(dir, Options{Getenv: env(nil)})
		var e *Error
		if !errors.As(err, &e) || !errors.Is(err, tc.want) || e.File != tc.file || !strings.Contains(err.Error(), dir) {
			t.Errorf("%s: err = %v, want %v naming %s in %s", tc.name, err, tc.want, tc.file, dir)
		}
	}
	dir := write(all)
	if res, err := ResolveModel(dir, Options{Getenv: env(nil)}); err != nil || res.Kind != KindPath || !slices.Equal(res.Weights, []string{shard1, shard2}) {
		t.Errorf("sharded dir: %+v, %v", res, err)
	}
	cfg := write(map[string][]byte{ConfigFile: []byte("{}")})
	if res, err := ResolveModel(cfg, Options{Getenv: env(nil)}); err != nil || !res.NoWeights {
		t.Errorf("config-only dir: %+v, %v", res, err)
	}
	if _, err := ResolveModel(filepath.Join(cfg, ConfigFile), Options{Getenv: env(nil)}); !errors.Is(err, ErrNoModel) {
		t.Errorf("a file: %v", err)
	}
	if _, err := ResolveModel("no-such-dir", Options{Getenv: env(nil)}); !errors.Is(err, ErrBadRepo) {
		t.Errorf("neither: %v", err)
	}
	if _, err := ResolveModel("acme/m", Options{Getenv: env(nil)}); !errors.Is(err, ErrNoCache) {
		t.Errorf("no cache folder: %v", err)
	}
}
