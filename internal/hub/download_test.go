package hub

import (
	"bytes"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const commitA = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"

// The layout huggingface_hub writes: blobs/<etag>, snapshots/<commit>/<file> a relative
// symlink to it, refs/<rev> holding the commit.
func TestDownloadLayout(t *testing.T) {
	weights := bytes.Repeat([]byte("0123456789"), 100_000) // 1 MB: several copy buffers
	config := []byte(`{"model_type":"mistral"}`)
	h := newFakeHub(t, "acme/m", commitA, map[string][]byte{"config.json": config, "model.safetensors": weights})
	cache := t.TempDir()
	var told [][2]int64
	c := New(Options{Getenv: env(map[string]string{"HF_ENDPOINT": h.URL, "HF_HUB_CACHE": cache, "HF_TOKEN": "hf_x"}),
		Progress: func(file string, done, total int64) { told = append(told, [2]int64{done, total}) }})
	repo, _ := ParseRepo("acme/m")
	for _, name := range []string{"config.json", "model.safetensors"} {
		f, err := c.Download(repo, name, DownloadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		snap := filepath.Join(cache, "models--acme--m", "snapshots", commitA, name)
		if f.Path != snap || f.Commit != commitA {
			t.Errorf("%s: File %+v, want path %s commit %s", name, f, snap, commitA)
		}
		target, err := os.Readlink(snap)
		if err != nil {
			t.Fatalf("%s: not a symlink: %v", name, err)
		}
		if !strings.HasPrefix(target, filepath.Join("..", "..", "blobs")+string(filepath.Separator)) {
			t.Errorf("%s: link target %q, want ../../blobs/…", name, target)
		}
		want := h.files[name]
		if !bytes.Equal(readFile(t, snap), want) || f.Size != int64(len(want)) {
			t.Errorf("%s: stored content differs (size %d)", name, f.Size)
		}
	}
	// LFS blob named by its sha256, plain git file by its git blob id (the quoted ETag).
	if !IsFile(filepath.Join(cache, "models--acme--m", "blobs", sha256Hex(weights))) {
		t.Error("weights blob not named by its sha256")
	}
	if got := string(readFile(t, filepath.Join(cache, "models--acme--m", "refs", "main"))); got != commitA {
		t.Errorf("refs/main = %q", got)
	}
	if tmp := tempFiles(t, cache); len(tmp) != 0 {
		t.Errorf("temporary files left: %v", tmp)
	}
	if last := told[len(told)-1]; last != [2]int64{int64(len(weights)), int64(len(weights))} {
		t.Errorf("last progress %v, want the full size twice", last)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, a := range h.auth {
		if a != "Bearer hf_x" {
			t.Errorf("Authorization %q, want the HF_TOKEN bearer", a)
		}
	}
}

// A body shorter than announced, or an announced size that disagrees, never reaches the
// snapshot, and no temporary file stays behind.
func TestDownloadSizeChecks(t *testing.T) {
	weights := bytes.Repeat([]byte{7}, 300_000)
	for _, tc := range []struct {
		name string
		set  func(h *fakeHub)
		max  int64
		want string
	}{
		{"truncated body", func(h *fakeHub) { h.truncate["model.safetensors"] = 123_456 }, 0, "unexpected EOF"},
		{"X-Linked-Size larger", func(h *fakeHub) { h.size["model.safetensors"] = 300_001 }, 0, "X-Linked-Size 300001"},
		{"over the limit", nil, 1000, "larger than 1000 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFakeHub(t, "acme/m", commitA, map[string][]byte{"model.safetensors": weights})
			if tc.set != nil {
				h.set(tc.set)
			}
			cache := t.TempDir()
			c := New(Options{Getenv: env(map[string]string{"HF_ENDPOINT": h.URL, "HF_HUB_CACHE": cache})})
			_, err := c.Download(Repo{ID: "acme/m", Rev: "main"}, "model.safetensors", DownloadOptions{MaxBytes: tc.max})
			var e *Error
			if !errors.As(err, &e) || !errors.Is(err, ErrDownload) || e.File != "model.safetensors" || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want an ErrDownload naming model.safetensors and %q", err, tc.want)
			}
			if entries, _ := os.ReadDir(cache); len(entries) != 0 {
				t.Errorf("cache holds %d entries after a failed first download", len(entries))
			}
		})
	}
}

// A body whose sha256 is not the X-Linked-Etag the Hub announced is refused.
func TestDownloadSHA256Mismatch(t *testing.T) {
	h := newFakeHub(t, "acme/m", commitA, map[string][]byte{"model.safetensors": []byte("good bytes")})
	h.Config.Handler = wrapCDN(h, []byte("evil bytes")) // same length, other content
	cache := t.TempDir()
	c := New(Options{Getenv: env(map[string]string{"HF_ENDPOINT": h.URL, "HF_HUB_CACHE": cache})})
	_, err := c.Download(Repo{ID: "acme/m", Rev: "main"}, "model.safetensors", DownloadOptions{})
	if !errors.Is(err, ErrDownload) || !strings.Contains(err.Error(), "X-Linked-Etag") {
		t.Fatalf("err = %v", err)
	}
	if entries, _ := os.ReadDir(cache); len(entries) != 0 {
		t.Errorf("cache holds %d entries", len(entries))
	}
}

// wrapCDN serves body for every /cdn/ request and leaves the rest to h.
type cdnOverride struct {
	h    *fakeHub
	body []byte
}

func wrapCDN(h *fakeHub, body []byte) *cdnOverride { return &cdnOverride{h, body} }

func (o *cdnOverride) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/cdn/") {
		w.Write(o.body)
		return
	}
	o.h.serve(w, r)
}

func TestDownloadErrors(t *testing.T) {
	h := newFakeHub(t, "acme/m", commitA, map[string][]byte{"config.json": []byte("{}")})
	cache := t.TempDir()
	vars := map[string]string{"HF_ENDPOINT": h.URL, "HF_HUB_CACHE": cache}
	c := New(Options{Getenv: env(vars)})
	_, err := c.Download(Repo{ID: "acme/m", Rev: "main"}, "tokenizer.json", DownloadOptions{})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "HTTP 404") || !strings.Contains(err.Error(), "EntryNotFound") {
		t.Errorf("missing file: %v", err)
	}
	_, err = c.Download(Repo{ID: "acme/m", Rev: "v9", Pinned: true}, "config.json", DownloadOptions{})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "RevisionNotFound") {
		t.Errorf("missing revision: %v", err)
	}
	checkErr := errors.New("not what we want")
	_, err = c.Download(Repo{ID: "acme/m", Rev: "main"}, "config.json", DownloadOptions{Check: func(string) error { return checkErr }})
	if !errors.Is(err, checkErr) || !errors.Is(err, ErrDownload) {
		t.Errorf("check failure: %v", err)
	}
	if entries, _ := os.ReadDir(cache); len(entries) != 0 {
		t.Errorf("cache holds %d entries after failed downloads", len(entries))
	}
	if _, err := New(Options{Getenv: env(vars), Offline: true}).Download(Repo{ID: "acme/m", Rev: "main"}, "config.json", DownloadOptions{}); !errors.Is(err, ErrNotCached) {
		t.Errorf("offline: %v", err)
	}
	if _, err := c.Download(Repo{ID: "acme/m", Rev: "main"}, "../escape", DownloadOptions{}); !errors.Is(err, ErrDownload) {
		t.Errorf("unsafe name: %v", err)
	}
	if n := len(h.requested()); n != 3 {
		t.Errorf("%d requests, want 3 (no request offline or for an unsafe name)", n)
	}
}

func TestDownloadGated(t *testing.T) {
	h := newFakeHub(t, "mistralai/Mistral-7B-v0.3", commitA, nil)
	h.status = 401
	for _, tc := range []struct {
		token, want string
	}{
		{"", "set HF_TOKEN"},
		{"hf_nope", "accept the repo's conditions"},
	} {
		c := New(Options{Getenv: env(map[string]string{"HF_ENDPOINT": h.URL, "HF_HUB_CACHE": t.TempDir(), "HF_TOKEN": tc.token})})
		_, err := c.Download(Repo{ID: "mistralai/Mistral-7B-v0.3", Rev: "main"}, "config.json", DownloadOptions{})
		var e *Error
		if !errors.As(err, &e) || !errors.Is(err, ErrUnauthorized) || e.Status != 401 || !strings.Contains(err.Error(), tc.want) ||
			!strings.Contains(err.Error(), "mistralai/Mistral-7B-v0.3") || !strings.Contains(err.Error(), "GatedRepo") {
			t.Errorf("token %q: err = %v, want ErrUnauthorized saying %q", tc.token, err, tc.want)
		}
	}
}

// A connection that goes quiet is abandoned with a named error instead of hanging.
func TestDownloadStalled(t *testing.T) {
	h := newFakeHub(t, "acme/m", commitA, map[string][]byte{"model.safetensors": []byte("never sent")})
	h.stall["model.safetensors"] = true
	cache := t.TempDir()
	c := New(Options{Getenv: env(map[string]string{"HF_ENDPOINT": h.URL, "HF_HUB_CACHE": cache}), IdleTimeout: 50 * time.Millisecond})
	_, err := c.Download(Repo{ID: "acme/m", Rev: "main"}, "model.safetensors", DownloadOptions{})
	if !errors.Is(err, errStalled) {
		t.Fatalf("err = %v, want the idle timeout", err)
	}
	if entries, _ := os.ReadDir(cache); len(entries) != 0 {
		t.Errorf("cache holds %d entries", len(entries))
	}
}

// Without a cache folder the content is still checked (the tokenizer loads it) but not kept.
func TestDownloadNoCache(t *testing.T) {
	h := newFakeHub(t, "acme/m", commitA, map[string][]byte{"config.json": []byte(`{"a":1}`)})
	var seen []byte
	c := New(Options{Getenv: env(map[string]string{"HF_ENDPOINT": h.URL})})
	f, err := c.Download(Repo{ID: "acme/m", Rev: "main"}, "config.json", DownloadOptions{Check: func(p string) error {
		seen = readFile(t, p)
		return nil
	}})
	if err != nil || f.Path != "" || f.Commit != commitA || string(seen) != `{"a":1}` {
		t.Fatalf("File %+v, err %v, seen %q", f, err, seen)
	}
}

// Resolvers downloading the same files at once (threads here; processes alike, since the
// temporary names hold the pid and a random part) each write their own temporary file, and
// someone else's temporary file in blobs/ is left alone.
func TestDownloadConcurrent(t *testing.T) {
	shards := map[string][]byte{
		"config.json": []byte(`{"model_type":"mistral"}`),
	}
	for i, name := range []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"} {
		shards[name] = bytes.Repeat([]byte{byte('a' + i)}, 2<<20)
	}
	shards["model.safetensors.index.json"] = []byte(`{"metadata":{},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}`)
	h := newFakeHub(t, "acme/m", commitA, shards)
	cache := t.TempDir()
	blobs := filepath.Join(cache, "models--acme--m", "blobs")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(blobs, ".model-00001-of-00002.safetensors.1.tmp-123456")
	if err := os.WriteFile(foreign, []byte("another process's download"), 0o644); err != nil {
		t.Fatal(err)
	}
	const n = 8
	var wg sync.WaitGroup
	res := make([]Resolution, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			res[i], errs[i] = ResolveModel("acme/m", Options{Getenv: env(map[string]string{"HF_ENDPOINT": h.URL, "HF_HUB_CACHE": cache})})
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("resolver %d: %v", i, errs[i])
		}
		if res[i].Dir != res[0].Dir || !slices.Equal(res[i].Weights, res[0].Weights) {
			t.Errorf("resolver %d: %+v, resolver 0: %+v", i, res[i], res[0])
		}
	}
	for name, want := range shards {
		if got := readFile(t, filepath.Join(res[0].Dir, name)); !bytes.Equal(got, want) {
			t.Errorf("%s: content differs", name)
		}
	}
	if got := string(readFile(t, foreign)); got != "another process's download" {
		t.Errorf("foreign temporary file changed: %q", got)
	}
	if tmp := tempFiles(t, cache); len(tmp) != 1 {
		t.Errorf("temporary files: %v, want only the foreign one", tmp)
	}
}
