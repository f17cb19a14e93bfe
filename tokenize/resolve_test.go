package tokenize

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ktoloader/ktoloader/internal/shared"
	"github.com/ktoloader/ktoloader/testdata"
)

// The demo model as a file, as the build script wrote it (tests run in tokenize/).
const demoModelFile = "../testdata/demo-tokenizer/tokenizer.model"

const defaultRepo = "unsloth/mistral-7b-v0.3"

// mistralControls are Mistral v0.3's control tokens at their ids (shared/tokenizers/
// mistral-7b-v0.3/SOURCES.md), which the demo tokenizer must reproduce.
var mistralControls = []string{"<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[TOOL_CALLS]",
	"[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]"}

// env returns a Getenv that sees only vars, so the machine's own HF cache, token and
// $KTOLOADER_TOKENIZER never leak into a test.
func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// cacheSnapshot lays out repo in an HF cache the way huggingface_hub does: the content in
// blobs/, snapshots/<rev>/<file> a relative symlink to it, and refs/main = rev when withRef.
func cacheSnapshot(t *testing.T, cache, repo, rev, file string, content []byte, withRef bool) string {
	t.Helper()
	dir := filepath.Join(cache, "models--"+strings.ReplaceAll(repo, "/", "--"))
	blob := fmt.Sprintf("blob-%s-%s", rev, file)
	for _, d := range []string{"blobs", filepath.Join("snapshots", rev), "refs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "blobs", blob), content, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "snapshots", rev, file)
	if err := os.Symlink(filepath.Join("..", "..", "blobs", blob), link); err != nil {
		t.Fatal(err)
	}
	if withRef {
		if err := os.WriteFile(filepath.Join(dir, "refs", "main"), []byte(rev+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return link
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestResolveNamedPath(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tokenizer.model"), readFile(t, demoModelFile), 0o644); err != nil {
		t.Fatal(err)
	}
	broken := filepath.Join(t.TempDir(), "tokenizer.model")
	if err := os.WriteFile(broken, []byte("not a model"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, spec string
		vars       map[string]string
		kind, src  string
	}{
		{"file", demoModelFile, nil, KindPath, demoModelFile},
		{"dir", dir, nil, KindPath, dir},
		{"flag wins over env", demoModelFile, map[string]string{EnvTokenizer: broken}, KindPath, demoModelFile},
		{"env file", "", map[string]string{EnvTokenizer: demoModelFile}, KindEnv, demoModelFile},
		{"env dir", "", map[string]string{EnvTokenizer: dir}, KindEnv, dir},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, res, err := Resolve(tc.spec, ResolveOptions{Getenv: env(tc.vars), Offline: true})
			if err != nil {
				t.Fatal(err)
			}
			if res.Kind != tc.kind || res.Source != tc.src || res.Demo {
				t.Errorf("resolution = %+v, want kind %q source %q, not demo", res, tc.kind, tc.src)
			}
			if !strings.HasSuffix(res.Path, "tokenizer.model") || tok.Name() != res.Path {
				t.Errorf("Path %q, Name %q: want the loaded file", res.Path, tok.Name())
			}
		})
	}
}

// A tokenizer the user named that cannot be used is an error, never the demo.
func TestResolveNamedErrors(t *testing.T) {
	broken := filepath.Join(t.TempDir(), "tokenizer.model")
	if err := os.WriteFile(broken, []byte("\x0a\x03abc not a model"), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := t.TempDir()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.NotFound(w, r)
	}))
	defer srv.Close()
	online := map[string]string{"HF_ENDPOINT": srv.URL, "HF_HUB_CACHE": t.TempDir()}

	for _, tc := range []struct {
		name    string
		spec    string
		vars    map[string]string
		offline bool
		want    error
	}{
		{"missing path", "no/such/tokenizer.model", nil, true, ErrTokenizerNotFound},
		{"missing relative file", "tokenizer-that-is-not-here.json", nil, true, ErrTokenizerNotFound},
		{"broken file", broken, nil, true, ErrMalformedTokenizer},
		{"dir without tokenizer", empty, nil, true, ErrNoTokenizerFile},
		{"broken env", "", map[string]string{EnvTokenizer: broken}, true, ErrMalformedTokenizer},
		{"missing env", "", map[string]string{EnvTokenizer: "/no/such/dir"}, true, ErrTokenizerNotFound},
		{"repo offline", "acme/no-such-model", map[string]string{"HF_HUB_CACHE": t.TempDir()}, true, ErrTokenizerNotFound},
		{"repo HF_HUB_OFFLINE", "acme/no-such-model", map[string]string{"HF_HUB_CACHE": t.TempDir(), "HF_HUB_OFFLINE": "1"}, false, ErrTokenizerNotFound},
		{"repo not on the hub", "acme/no-such-model", online, false, ErrDownloadFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, res, err := Resolve(tc.spec, ResolveOptions{Getenv: env(tc.vars), Offline: tc.offline})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if tok != nil || res.Demo {
				t.Errorf("got a tokenizer (%+v) although the named one failed", res)
			}
		})
	}
	if hits.Load() != 2 { // tokenizer.json, then tokenizer.model, for "repo not on the hub" only
		t.Errorf("server saw %d requests, want 2", hits.Load())
	}
}

// The cache folder's resolution ($HF_HUB_CACHE, $HF_HOME/hub, ...) is tested in internal/hub
// (TestCacheDir); HF_HOME is exercised end to end by TestResolveDownloadTokenizerJSON.

func TestResolveHFCacheSnapshots(t *testing.T) {
	demo := readFile(t, demoModelFile)
	t.Run("refs/main wins over name order", func(t *testing.T) {
		cache := t.TempDir()
		cacheSnapshot(t, cache, defaultRepo, "aaaa", "tokenizer.model", []byte("stale, never read"), false)
		cacheSnapshot(t, cache, defaultRepo, "ffff", "tokenizer.model", demo, true)
		_, res, err := Resolve("", ResolveOptions{Getenv: env(map[string]string{"HF_HUB_CACHE": cache}), Offline: true})
		if err != nil || res.Source != defaultRepo+"@ffff/tokenizer.model" {
			t.Fatalf("res %+v, err %v: want the snapshot refs/main names", res, err)
		}
	})
	t.Run("no refs/main: first snapshot by name", func(t *testing.T) {
		cache := t.TempDir()
		cacheSnapshot(t, cache, defaultRepo, "bbbb", "tokenizer.model", demo, false)
		cacheSnapshot(t, cache, defaultRepo, "cccc", "tokenizer.model", []byte("never read"), false)
		_, res, err := Resolve("", ResolveOptions{Getenv: env(map[string]string{"HF_HUB_CACHE": cache}), Offline: true})
		if err != nil || res.Source != defaultRepo+"@bbbb/tokenizer.model" {
			t.Fatalf("res %+v, err %v", res, err)
		}
	})
	t.Run("dangling symlink is no tokenizer", func(t *testing.T) {
		cache := t.TempDir()
		link := cacheSnapshot(t, cache, defaultRepo, "aaaa", "tokenizer.json", []byte("{}"), true)
		if err := os.Remove(filepath.Join(filepath.Dir(link), "..", "..", "blobs", "blob-aaaa-tokenizer.json")); err != nil {
			t.Fatal(err)
		}
		cacheSnapshot(t, cache, "mistralai/Mistral-7B-Instruct-v0.3", "dddd", "tokenizer.model", demo, true)
		_, res, err := Resolve("", ResolveOptions{Getenv: env(map[string]string{"HF_HUB_CACHE": cache}), Offline: true})
		if err != nil || res.Source != "mistralai/Mistral-7B-Instruct-v0.3@dddd/tokenizer.model" {
			t.Fatalf("res %+v, err %v: want the next default repo", res, err)
		}
	})
	t.Run("named repo", func(t *testing.T) {
		cache := t.TempDir()
		cacheSnapshot(t, cache, "acme/tiny-mistral", "eeee", "tokenizer.model", demo, true)
		for _, vars := range []map[string]string{
			{"HF_HUB_CACHE": cache},
			{"HF_HUB_CACHE": cache, EnvTokenizer: "acme/tiny-mistral"},
		} {
			spec := "acme/tiny-mistral"
			if vars[EnvTokenizer] != "" {
				spec = ""
			}
			_, res, err := Resolve(spec, ResolveOptions{Getenv: env(vars), Offline: true})
			if err != nil || res.Kind != KindHFCache || res.Source != "acme/tiny-mistral@eeee/tokenizer.model" {
				t.Fatalf("spec %q env %v: res %+v, err %v", spec, vars, res, err)
			}
		}
	})
	t.Run("named repo at a revision", func(t *testing.T) {
		cache := t.TempDir()
		cacheSnapshot(t, cache, "acme/tiny-mistral", "eeee", "tokenizer.model", demo, true)
		cacheSnapshot(t, cache, "acme/tiny-mistral", "ffff", "tokenizer.model", demo, false)
		dir := filepath.Join(cache, "models--acme--tiny-mistral", "refs")
		if err := os.WriteFile(filepath.Join(dir, "v2"), []byte("ffff"), 0o644); err != nil {
			t.Fatal(err)
		}
		for spec, want := range map[string]string{
			"acme/tiny-mistral":      "acme/tiny-mistral@eeee/tokenizer.model",
			"acme/tiny-mistral@v2":   "acme/tiny-mistral@ffff/tokenizer.model",
			"acme/tiny-mistral@main": "acme/tiny-mistral@eeee/tokenizer.model",
		} {
			_, res, err := Resolve(spec, ResolveOptions{Getenv: env(map[string]string{"HF_HUB_CACHE": cache}), Offline: true})
			if err != nil || res.Source != want {
				t.Errorf("%s: res %+v, err %v; want source %s", spec, res, err, want)
			}
		}
		// A pinned revision the cache does not hold is not replaced by another snapshot.
		_, _, err := Resolve("acme/tiny-mistral@v3", ResolveOptions{Getenv: env(map[string]string{"HF_HUB_CACHE": cache}), Offline: true})
		if !errors.Is(err, ErrTokenizerNotFound) {
			t.Errorf("@v3: err = %v, want ErrTokenizerNotFound", err)
		}
	})
	t.Run("broken cached file is an error", func(t *testing.T) {
		cache := t.TempDir()
		cacheSnapshot(t, cache, defaultRepo, "aaaa", "tokenizer.json", []byte(`{"model": 1}`), true)
		tok, res, err := Resolve("", ResolveOptions{Getenv: env(map[string]string{"HF_HUB_CACHE": cache}), Offline: true})
		if err == nil || tok != nil || res.Demo {
			t.Fatalf("res %+v, err %v: want an error, not a fallback", res, err)
		}
	})
}

// The real Mistral tokenizer from the shared folder, found in a fake cache.
func TestResolveHFCacheMistral(t *testing.T) {
	src := shared.Path(t, "tokenizers", "mistral-7b-v0.3", "tokenizer.json")
	cache := t.TempDir()
	cacheSnapshot(t, cache, defaultRepo, "rev1", "tokenizer.json", readFile(t, src), true)
	tok, res, err := Resolve("", ResolveOptions{Getenv: env(map[string]string{"HF_HUB_CACHE": cache}), Offline: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Kind != KindHFCache || res.Source != defaultRepo+"@rev1/tokenizer.json" || tok.VocabSize() != 32768 {
		t.Errorf("res %+v, vocab %d", res, tok.VocabSize())
	}
}

// hubServer serves one repo the way the Hub does: resolve/main/<file> answers with a redirect
// to a CDN path, carrying X-Repo-Commit; the CDN path serves the bytes.
type hubServer struct {
	*httptest.Server
	files  map[string][]byte // file name -> content; absent files are 404
	commit string            // X-Repo-Commit; "" sends none
	status int               // when not 0, every resolve/ request gets this status
	hits   atomic.Int32
	auth   atomic.Value // Authorization header of the last resolve/ request
}

func newHubServer(t *testing.T, repo string, files map[string][]byte, commit string) *hubServer {
	h := &hubServer{files: files, commit: commit}
	h.auth.Store("")
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if name, ok := strings.CutPrefix(r.URL.Path, "/cdn/"); ok {
			w.Write(h.files[name])
			return
		}
		h.hits.Add(1)
		h.auth.Store(r.Header.Get("Authorization"))
		name, ok := strings.CutPrefix(r.URL.Path, "/"+repo+"/resolve/main/")
		if h.commit != "" {
			w.Header().Set("X-Repo-Commit", h.commit)
		}
		switch {
		case h.status != 0:
			w.WriteHeader(h.status)
		case !ok || h.files[name] == nil:
			http.NotFound(w, r)
		default:
			http.Redirect(w, r, "/cdn/"+name, http.StatusFound)
		}
	}))
	t.Cleanup(h.Close)
	return h
}

func TestResolveDownload(t *testing.T) {
	demo := readFile(t, demoModelFile)
	const commit = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
	srv := newHubServer(t, defaultRepo, map[string][]byte{"tokenizer.model": demo}, commit)
	cache := t.TempDir()
	vars := map[string]string{"HF_ENDPOINT": srv.URL + "/", "HF_HUB_CACHE": cache, "HF_TOKEN": "hf_secret"}

	tok, res, err := Resolve("", ResolveOptions{Getenv: env(vars)})
	if err != nil {
		t.Fatal(err)
	}
	repoDir := filepath.Join(cache, "models--unsloth--mistral-7b-v0.3")
	stored := filepath.Join(repoDir, "snapshots", commit, "tokenizer.model")
	want := Resolution{Kind: KindDownload, Source: defaultRepo + "@" + commit + "/tokenizer.model", Path: stored}
	if res.Kind != want.Kind || res.Source != want.Source || res.Path != want.Path || res.Demo {
		t.Errorf("resolution = %+v, want %+v", res, want)
	}
	if tok.Name() != stored || tok.VocabSize() != 4000 {
		t.Errorf("Name %q, VocabSize %d", tok.Name(), tok.VocabSize())
	}
	if got := srv.auth.Load(); got != "Bearer hf_secret" {
		t.Errorf("Authorization = %q, want the HF_TOKEN bearer", got)
	}
	if srv.hits.Load() != 2 { // tokenizer.json (404), tokenizer.model
		t.Errorf("%d resolve requests, want 2", srv.hits.Load())
	}
	if !bytes.Equal(readFile(t, stored), demo) {
		t.Error("stored file differs from the served one")
	}
	if ref := string(readFile(t, filepath.Join(repoDir, "refs", "main"))); ref != commit {
		t.Errorf("refs/main = %q, want %q", ref, commit)
	}
	filepath.WalkDir(cache, func(p string, d os.DirEntry, err error) error {
		if strings.Contains(filepath.Base(p), ".tmp-") {
			t.Errorf("temporary file left behind: %s", p)
		}
		return nil
	})

	// The next run finds the stored copy without the network.
	srv.Close()
	_, res, err = Resolve("", ResolveOptions{Getenv: env(vars)})
	if err != nil || res.Kind != KindHFCache || res.Source != want.Source {
		t.Errorf("rerun: res %+v, err %v: want the cached download", res, err)
	}
}

// The real tokenizer.json from a mirror that names no commit, and the token from the file
// huggingface-cli login writes.
func TestResolveDownloadTokenizerJSON(t *testing.T) {
	content := readFile(t, shared.Path(t, "tokenizers", "mistral-7b-v0.3", "tokenizer.json"))
	srv := newHubServer(t, defaultRepo, map[string][]byte{"tokenizer.json": content}, "")
	home := t.TempDir()
	if err := os.WriteFile(filepath.Join(home, "token"), []byte("hf_from_file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tok, res, err := Resolve("", ResolveOptions{Getenv: env(map[string]string{"HF_ENDPOINT": srv.URL, "HF_HOME": home})})
	if err != nil {
		t.Fatal(err)
	}
	if res.Kind != KindDownload || !strings.HasSuffix(res.Source, "/tokenizer.json") || tok.VocabSize() != 32768 {
		t.Errorf("res %+v, vocab %d", res, tok.VocabSize())
	}
	if got := srv.auth.Load(); got != "Bearer hf_from_file" {
		t.Errorf("Authorization = %q, want the token file's", got)
	}
	if !strings.HasPrefix(res.Path, filepath.Join(home, "hub", "models--unsloth--mistral-7b-v0.3", "snapshots")) {
		t.Errorf("stored at %q, want under HF_HOME/hub", res.Path)
	}
}

// When nothing is named, a download that fails in any way leads to the demo, with a note.
func TestResolveDownloadFallsThrough(t *testing.T) {
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	for _, tc := range []struct {
		name   string
		status int
		files  map[string][]byte
		url    string // overrides the server's URL
		note   string
	}{
		{"server error", http.StatusInternalServerError, nil, "", "HTTP 500"},
		{"gated", http.StatusUnauthorized, nil, "", "HF_TOKEN"},
		{"not found", 0, nil, "", "HTTP 404"},
		{"not a tokenizer", 0, map[string][]byte{"tokenizer.json": []byte("<html>rate limited</html>")}, "", "tokenizer.json"},
		{"unreachable", 0, nil, closed.URL, "connect"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newHubServer(t, defaultRepo, tc.files, "")
			srv.status = tc.status
			url := srv.URL
			if tc.url != "" {
				url = tc.url
			}
			cache := t.TempDir()
			tok, res, err := Resolve("", ResolveOptions{Getenv: env(map[string]string{"HF_ENDPOINT": url, "HF_HUB_CACHE": cache})})
			if err != nil {
				t.Fatal(err)
			}
			if res.Kind != KindDemo || !res.Demo || tok.VocabSize() != 4000 {
				t.Fatalf("res %+v: want the demo", res)
			}
			if len(res.Notes) != 1 || !strings.Contains(res.Notes[0], tc.note) {
				t.Errorf("notes %q, want one mentioning %q", res.Notes, tc.note)
			}
			if entries, _ := os.ReadDir(cache); len(entries) != 0 {
				t.Errorf("cache holds %d entries after a failed download", len(entries))
			}
		})
	}
}

func TestResolveOffline(t *testing.T) {
	srv := newHubServer(t, defaultRepo, map[string][]byte{"tokenizer.model": readFile(t, demoModelFile)}, "")
	for _, tc := range []struct {
		name    string
		vars    map[string]string
		offline bool
	}{
		{"HF_HUB_OFFLINE=1", map[string]string{"HF_HUB_OFFLINE": "1"}, false},
		{"HF_HUB_OFFLINE=true", map[string]string{"HF_HUB_OFFLINE": "True"}, false},
		{"option", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vars := map[string]string{"HF_ENDPOINT": srv.URL, "HF_HUB_CACHE": t.TempDir()}
			for k, v := range tc.vars {
				vars[k] = v
			}
			_, res, err := Resolve("", ResolveOptions{Getenv: env(vars), Offline: tc.offline})
			if err != nil || !res.Demo {
				t.Fatalf("res %+v, err %v: want the demo", res, err)
			}
		})
	}
	if srv.hits.Load() != 0 {
		t.Errorf("offline runs made %d requests", srv.hits.Load())
	}
}

func TestResolveDemo(t *testing.T) {
	tok, res, err := Resolve("", ResolveOptions{Getenv: env(nil), Offline: true})
	if err != nil {
		t.Fatal(err)
	}
	want := Resolution{Kind: KindDemo, Source: testdata.DemoTokenizerName, Demo: true}
	if res.Kind != want.Kind || res.Source != want.Source || !res.Demo || res.Path != "" {
		t.Errorf("resolution = %+v, want %+v", res, want)
	}
	for id, name := range mistralControls {
		if got, ok := tok.ControlID(name); !ok || got != int32(id) {
			t.Errorf("ControlID(%q) = %d, %v; want %d (Mistral's id)", name, got, ok, id)
		}
	}
	if tok.BOS() != 1 || tok.EOS() != 2 {
		t.Errorf("BOS %d EOS %d, want 1 2", tok.BOS(), tok.EOS())
	}

	_, _, err = Resolve("", ResolveOptions{Getenv: env(nil), Offline: true, NoDemo: true})
	if !errors.Is(err, ErrTokenizerNotFound) {
		t.Errorf("NoDemo: err = %v, want ErrTokenizerNotFound", err)
	}
}

// The demo's control tokens sit where Mistral's real tokenizer has them.
func TestDemoControlIDsMatchMistral(t *testing.T) {
	mistral, err := Load(shared.Path(t, "tokenizers", "mistral-7b-v0.3", "tokenizer.model"))
	if err != nil {
		t.Fatal(err)
	}
	demo, err := LoadModelProto(bytes.NewReader(testdata.DemoTokenizerModel))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range mistralControls {
		m, mok := mistral.ControlID(name)
		d, dok := demo.ControlID(name)
		if m != d || !mok || !dok {
			t.Errorf("%s: Mistral %d (%v), demo %d (%v)", name, m, mok, d, dok)
		}
	}
}

// sampleTexts returns every line of text the template renders from the sample: message
// contents and tool-call arguments, split at newlines (spm_encode reads one line at a time).
func sampleTexts(t *testing.T) []string {
	t.Helper()
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(testdata.SampleJSONL))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var row struct {
			Conversations, Messages []struct {
				Content   *string
				ToolCalls []struct{ Function struct{ Arguments string } } `json:"tool_calls"`
			}
		}
		if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
			t.Fatal(err)
		}
		for _, m := range append(row.Conversations, row.Messages...) {
			var texts []string
			if m.Content != nil {
				texts = append(texts, *m.Content)
			}
			for _, c := range m.ToolCalls {
				texts = append(texts, c.Function.Arguments)
			}
			for _, s := range texts {
				for line := range strings.SplitSeq(s, "\n") {
					if line != "" {
						out = append(out, line)
					}
				}
			}
		}
	}
	if len(out) < 1000 {
		t.Fatalf("only %d lines of text in the sample", len(out))
	}
	return out
}

// The demo encodes the whole sample without <unk> and without control tokens (a literal
// "[INST]" in the sample stays characters), and decodes it back exactly.
func TestDemoRoundTrip(t *testing.T) {
	tok, err := LoadModelProto(bytes.NewReader(testdata.DemoTokenizerModel))
	if err != nil {
		t.Fatal(err)
	}
	tok.SetSPM(true) // SentencePiece decoding keeps a leading space; tokenizers' strips one
	sawINST := false
	for _, line := range sampleTexts(t) {
		sawINST = sawINST || strings.Contains(line, "[INST]")
		ids := tok.Encode(line, EncodeOptions{})
		if i := slices.IndexFunc(ids, func(id int32) bool { return id < int32(len(mistralControls)) }); i >= 0 {
			t.Errorf("%q: id %d at %d is <unk> or a control token", line, ids[i], i)
		}
		if got := tok.Decode(ids); got != line {
			t.Errorf("Decode(Encode(%q)) = %q", line, got)
		}
	}
	if !sawINST {
		t.Error("the sample holds no literal [INST]")
	}
}

// The demo model gives the same ids here as in SentencePiece itself (spm_encode, Debian's
// sentencepiece package), on every line of the sample.
func TestDemoMatchesSentencePiece(t *testing.T) {
	spm, err := exec.LookPath("spm_encode")
	if err != nil {
		t.Skip("spm_encode not installed (apt-get install -y sentencepiece)")
	}
	lines := sampleTexts(t)
	cmd := exec.Command(spm, "--model="+demoModelFile, "--output_format=id")
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(got) != len(lines) {
		t.Fatalf("spm_encode gave %d lines for %d", len(got), len(lines))
	}
	tok, err := LoadModelProto(bytes.NewReader(testdata.DemoTokenizerModel))
	if err != nil {
		t.Fatal(err)
	}
	tok.SetSPM(true)
	bad := 0
	for i, line := range lines {
		var want []int32
		for f := range strings.FieldsSeq(got[i]) {
			n, err := strconv.Atoi(f)
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, int32(n))
		}
		if ids := tok.Encode(line, EncodeOptions{}); !slices.Equal(ids, want) {
			if bad++; bad <= 5 {
				t.Errorf("%q:\n got  %v\n want %v (spm_encode)", line, ids, want)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d lines differ from spm_encode", bad, len(lines))
	}
}
