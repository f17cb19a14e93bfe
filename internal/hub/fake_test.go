package hub

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// env returns a Getenv that sees only vars, so the machine's own HF cache and token never
// leak into a test.
func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// fakeHub serves one repo the way huggingface.co does (as huggingface_hub's file_download.py
// reads it): GET /ORG/NAME/resolve/REV/FILE answers with X-Repo-Commit; an LFS file (name
// ending in .safetensors) answers 302 to a CDN path with X-Linked-Size and X-Linked-Etag (its
// sha256), and the CDN serves the bytes; any other file is served directly with a quoted
// ETag (a git blob id). Unknown revisions and files are 404 with X-Error-Code.
type fakeHub struct {
	*httptest.Server
	repo   string
	commit string            // the commit every branch points at
	refs   map[string]string // branch or tag -> commit; the commit itself always resolves
	files  map[string][]byte

	mu       sync.Mutex
	status   int            // when not 0, every resolve/ request gets it (gated: 401)
	truncate map[string]int // file -> bytes actually sent, Content-Length still the full size
	size     map[string]int // file -> X-Linked-Size to announce instead of the true one
	stall    map[string]bool
	requests []string // "REV/FILE" of each resolve/ request, in order
	auth     []string // Authorization header of each resolve/ request
	stop     chan struct{}
}

func newFakeHub(t *testing.T, repo, commit string, files map[string][]byte) *fakeHub {
	h := &fakeHub{repo: repo, commit: commit, files: files, refs: map[string]string{"main": commit},
		truncate: map[string]int{}, size: map[string]int{}, stall: map[string]bool{}, stop: make(chan struct{})}
	h.Server = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(func() { close(h.stop); h.Close() })
	return h
}

func (h *fakeHub) serve(w http.ResponseWriter, r *http.Request) {
	if name, ok := strings.CutPrefix(r.URL.Path, "/cdn/"); ok {
		h.mu.Lock()
		n, cut := h.truncate[name]
		stall := h.stall[name]
		h.mu.Unlock()
		body := h.files[name]
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		if stall {
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
			case <-h.stop:
			}
			return
		}
		if cut {
			body = body[:n] // the server closes the connection short of Content-Length
		}
		w.Write(body)
		return
	}
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), "/"+h.repo+"/resolve/")
	revEsc, fileEsc, ok2 := strings.Cut(rest, "/")
	rev, err1 := url.PathUnescape(revEsc)
	file, err2 := url.PathUnescape(fileEsc)
	h.mu.Lock()
	h.requests = append(h.requests, rev+"/"+file)
	h.auth = append(h.auth, r.Header.Get("Authorization"))
	status := h.status
	linked, haveSize := h.size[file]
	h.mu.Unlock()
	if !ok || !ok2 || err1 != nil || err2 != nil {
		w.Header().Set("X-Error-Code", "RepoNotFound")
		http.Error(w, "Repository not found", http.StatusUnauthorized)
		return
	}
	if status != 0 {
		w.Header().Set("X-Error-Code", "GatedRepo")
		w.Header().Set("X-Error-Message", "Access to model "+h.repo+" is restricted.")
		w.WriteHeader(status)
		return
	}
	commit := h.refs[rev]
	if rev == h.commit {
		commit = h.commit
	}
	if commit == "" {
		w.Header().Set("X-Error-Code", "RevisionNotFound")
		http.Error(w, "Invalid rev id: "+rev, http.StatusNotFound)
		return
	}
	w.Header().Set("X-Repo-Commit", commit)
	body, exists := h.files[file]
	if !exists {
		w.Header().Set("X-Error-Code", "EntryNotFound")
		http.Error(w, "Entry not found", http.StatusNotFound)
		return
	}
	if strings.HasSuffix(file, ".safetensors") {
		if !haveSize {
			linked = len(body)
		}
		w.Header().Set("X-Linked-Size", strconv.Itoa(linked))
		w.Header().Set("X-Linked-Etag", `"`+sha256Hex(body)+`"`)
		http.Redirect(w, r, "/cdn/"+file, http.StatusFound)
		return
	}
	gitID := sha1.Sum(fmt.Appendf(nil, "blob %d\x00%s", len(body), body))
	w.Header().Set("ETag", `"`+hex.EncodeToString(gitID[:])+`"`)
	w.Write(body)
}

func (h *fakeHub) requested() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.requests...)
}

func (h *fakeHub) set(f func(h *fakeHub)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f(h)
}

// cacheFile lays out one file of repo in an HF cache as huggingface_hub does: the content in
// blobs/, snapshots/REV/FILE a relative symlink to it.
func cacheFile(t *testing.T, cache, repo, commit, file string, content []byte) string {
	t.Helper()
	dir := filepath.Join(cache, "models--"+strings.ReplaceAll(repo, "/", "--"))
	blob := sha256Hex(content)
	for _, d := range []string{"blobs", filepath.Join("snapshots", commit)} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "blobs", blob), content, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "snapshots", commit, file)
	if err := os.Symlink(filepath.Join("..", "..", "blobs", blob), link); err != nil {
		t.Fatal(err)
	}
	return link
}

// cacheRef writes refs/REV = commit.
func cacheRef(t *testing.T, cache, repo, rev, commit string) {
	t.Helper()
	p := filepath.Join(cache, "models--"+strings.ReplaceAll(repo, "/", "--"), "refs", filepath.FromSlash(rev))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(commit+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// tempFiles lists files under root whose names mark them temporary.
func tempFiles(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), ".tmp-") {
			out = append(out, p)
		}
		return nil
	})
	return out
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
