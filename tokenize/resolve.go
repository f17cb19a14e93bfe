package tokenize

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/ktoloader/ktoloader/testdata"
)

// How a tokenizer was found (Resolution.Kind).
const (
	KindPath     = "path"     // a local file or directory named by the caller (--tokenizer)
	KindEnv      = "env"      // a local file or directory named by $KTOLOADER_TOKENIZER
	KindHFCache  = "hf-cache" // a snapshot in the Hugging Face cache
	KindDownload = "download" // fetched from the Hub just now (and stored in the cache)
	KindDemo     = "demo"     // the embedded demo tokenizer: not Mistral's ids
)

// EnvTokenizer names the environment variable that plays the role of --tokenizer.
const EnvTokenizer = "KTOLOADER_TOKENIZER"

// DefaultRepos are the Hub repos looked for in the Hugging Face cache when no tokenizer is
// named, in order. All hold Mistral v0.3's "v3" vocabulary. Only the first is downloaded:
// unsloth's copy is not gated, so it needs no token.
var DefaultRepos = []string{
	"unsloth/mistral-7b-v0.3",
	"mistralai/Mistral-7B-v0.3",
	"mistralai/Mistral-7B-Instruct-v0.3",
	"unsloth/mistral-7b-instruct-v0.3",
}

// DefaultEndpoint is the Hub's base URL; $HF_ENDPOINT overrides it (mirrors, tests).
const DefaultEndpoint = "https://huggingface.co"

// DefaultDownloadTimeout bounds one download attempt, connection and body together: an
// offline machine must reach the demo quickly.
const DefaultDownloadTimeout = 20 * time.Second

// maxDownloadBytes bounds a downloaded tokenizer file (Mistral's tokenizer.json is 1.9 MB).
const maxDownloadBytes = 64 << 20

var (
	// ErrTokenizerNotFound: the named path does not exist and is not a Hub repo in the cache
	// or on the Hub; or nothing was found and the demo was not allowed.
	ErrTokenizerNotFound = errors.New("tokenizer not found")
	// ErrDownloadFailed: the Hub did not give a usable tokenizer file (network error, HTTP
	// status, a file that does not load). Only returned when a repo was named explicitly;
	// otherwise the resolver moves on to the next source.
	ErrDownloadFailed = errors.New("tokenizer download failed")
)

// ResolveOptions tunes Resolve. The zero value reads the real environment and may download.
type ResolveOptions struct {
	// Getenv reads environment variables; nil means os.Getenv. Tests pass their own.
	Getenv func(string) string
	// Offline skips the download, as $HF_HUB_OFFLINE=1 does.
	Offline bool
	// NoDemo makes "nothing found" an error (ErrTokenizerNotFound) instead of the demo.
	NoDemo bool
	// HTTPClient does the download; nil means a client with Timeout.
	HTTPClient *http.Client
	// Timeout bounds one download attempt; 0 means DefaultDownloadTimeout.
	Timeout time.Duration
	// Context cancels a download; nil means context.Background().
	Context context.Context
}

// Resolution says where the tokenizer came from, for the CLI's message and the manifest.
type Resolution struct {
	Kind string // KindPath, KindEnv, KindHFCache, KindDownload or KindDemo
	// Source names the tokenizer without machine-specific parts, fit for the manifest: the
	// path as given (flag or environment), "org/name@revision/file" for the Hub, or
	// testdata.DemoTokenizerName.
	Source string
	// Demo is true for the embedded demo tokenizer: its ids are not Mistral's.
	Demo bool
	// Path is the local file that was loaded ("" for the demo, or a download that could not
	// be stored). It may be absolute: for logs, not for the manifest.
	Path string
	// Notes say why earlier sources gave nothing (a failed download, a gated repo), so the
	// CLI can explain a demo fallback. For people; they may hold absolute paths.
	Notes []string
}

// Resolve finds and loads the tokenizer, in the order of DESIGN.md "Commands":
//
//  1. spec, when not empty: a tokenizer.json / tokenizer.model file or a directory holding
//     one; or, when no such path exists, a Hub repo id "org/name", looked up in the Hugging
//     Face cache and else downloaded.
//  2. $KTOLOADER_TOKENIZER, the same way.
//  3. The Hugging Face cache ($HF_HUB_CACHE, else $HF_HOME/hub, else
//     ~/.cache/huggingface/hub): the first of DefaultRepos with a snapshot holding a
//     tokenizer file (refs/main names the snapshot; without it the first snapshot by name).
//  4. A download of DefaultRepos[0] from the Hub ($HF_ENDPOINT, $HF_TOKEN or the cached token
//     file), unless offline ($HF_HUB_OFFLINE or Offline), stored in the cache layout.
//  5. The embedded demo tokenizer (Resolution.Demo), unless NoDemo.
//
// A tokenizer the user named (steps 1 and 2) that cannot be found or loaded is an error,
// never a fallback; so is a tokenizer found in the cache that does not load. A failed
// download in step 4 only adds a note and moves on.
func Resolve(spec string, opt ResolveOptions) (*Tokenizer, Resolution, error) {
	r := resolver{opt: opt}
	r.init()
	if spec != "" {
		return r.named(spec, KindPath)
	}
	if v := r.getenv(EnvTokenizer); v != "" {
		return r.named(v, KindEnv)
	}
	for _, repo := range DefaultRepos {
		t, res, found, err := r.fromCache(repo)
		if found || err != nil {
			return t, res, err
		}
	}
	if r.offline {
		r.note("download skipped: offline (HF_HUB_OFFLINE or --offline)")
	} else {
		t, res, err := r.download(DefaultRepos[0])
		if err == nil {
			return t, res, nil
		}
		r.note("%v", err)
	}
	if opt.NoDemo {
		return nil, Resolution{Notes: r.notes}, fmt.Errorf("%w: none given, none in the Hugging Face cache (%s), no download (%s)",
			ErrTokenizerNotFound, r.cacheDir, strings.Join(r.notes, "; "))
	}
	t, err := LoadModelProto(bytes.NewReader(testdata.DemoTokenizerModel))
	if err != nil {
		return nil, Resolution{}, fmt.Errorf("embedded demo tokenizer: %w", err)
	}
	return t, Resolution{Kind: KindDemo, Source: testdata.DemoTokenizerName, Demo: true, Notes: r.notes}, nil
}

type resolver struct {
	opt      ResolveOptions
	cacheDir string
	endpoint string
	offline  bool
	notes    []string
}

func (r *resolver) getenv(k string) string {
	if r.opt.Getenv != nil {
		return r.opt.Getenv(k)
	}
	return os.Getenv(k)
}

func (r *resolver) note(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

func (r *resolver) init() {
	r.cacheDir = r.hubCacheDir()
	r.endpoint = strings.TrimRight(r.getenv("HF_ENDPOINT"), "/")
	if r.endpoint == "" {
		r.endpoint = DefaultEndpoint
	}
	r.offline = r.opt.Offline || isTrue(r.getenv("HF_HUB_OFFLINE"))
}

// hfHome follows huggingface_hub: $HF_HOME, else $XDG_CACHE_HOME/huggingface, else
// ~/.cache/huggingface.
func (r *resolver) hfHome() string {
	if h := r.getenv("HF_HOME"); h != "" {
		return h
	}
	if x := r.getenv("XDG_CACHE_HOME"); x != "" {
		return filepath.Join(x, "huggingface")
	}
	home := r.getenv("HOME")
	if home == "" && r.opt.Getenv == nil {
		home, _ = os.UserHomeDir()
	}
	if home == "" {
		return ""
	}
	return filepath.Join(home, ".cache", "huggingface")
}

func (r *resolver) hubCacheDir() string {
	for _, k := range []string{"HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"} {
		if d := r.getenv(k); d != "" {
			return d
		}
	}
	if h := r.hfHome(); h != "" {
		return filepath.Join(h, "hub")
	}
	return ""
}

// isTrue reads a boolean environment value as huggingface_hub does.
func isTrue(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "1", "true", "yes", "on":
		return true
	}
	return false
}

// repoIDPattern is a Hub model id "org/name" (no revision, no nested path).
var repoIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$`)

func isRepoID(s string) bool {
	return repoIDPattern.MatchString(s) && !strings.Contains(s, "..") && !strings.Contains(s, "--")
}

// named resolves a tokenizer the user named: a path when it exists, else a repo id.
func (r *resolver) named(spec, kind string) (*Tokenizer, Resolution, error) {
	what := "--tokenizer"
	if kind == KindEnv {
		what = "$" + EnvTokenizer
	}
	_, statErr := os.Stat(spec)
	switch {
	case statErr == nil:
		t, err := Load(spec)
		if err != nil {
			return nil, Resolution{}, fmt.Errorf("%s %s: %w", what, spec, err)
		}
		return t, Resolution{Kind: kind, Source: spec, Path: t.Name()}, nil
	case !errors.Is(statErr, os.ErrNotExist):
		return nil, Resolution{}, fmt.Errorf("%s: %w", what, statErr)
	case !isRepoID(spec):
		return nil, Resolution{}, fmt.Errorf("%s %s: %w: no such file or directory", what, spec, ErrTokenizerNotFound)
	}
	t, res, found, err := r.fromCache(spec)
	if found || err != nil {
		if err != nil {
			err = fmt.Errorf("%s %s: %w", what, spec, err)
		}
		return t, res, err
	}
	if r.offline {
		return nil, Resolution{}, fmt.Errorf("%s %s: %w: no such file, not in the Hugging Face cache (%s), and offline",
			what, spec, ErrTokenizerNotFound, r.cacheDir)
	}
	t, res, err = r.download(spec)
	if err != nil {
		return nil, Resolution{}, fmt.Errorf("%s %s: no such file, not in the Hugging Face cache (%s): %w", what, spec, r.cacheDir, err)
	}
	return t, res, nil
}

// repoDir is the cache folder of a model repo: models--org--name.
func (r *resolver) repoDir(repo string) string {
	return filepath.Join(r.cacheDir, "models--"+strings.ReplaceAll(repo, "/", "--"))
}

// fromCache loads repo's tokenizer from the Hugging Face cache. found is false when the cache
// has no snapshot with a tokenizer file; a file that is there but does not load is an error.
func (r *resolver) fromCache(repo string) (t *Tokenizer, res Resolution, found bool, err error) {
	if r.cacheDir == "" {
		return nil, Resolution{}, false, nil
	}
	dir, rev := snapshotDir(r.repoDir(repo))
	if dir == "" {
		return nil, Resolution{}, false, nil
	}
	t, err = Load(dir)
	if err != nil {
		return nil, Resolution{}, true, fmt.Errorf("Hugging Face cache, %s@%s: %w", repo, rev, err)
	}
	return t, Resolution{
		Kind:   KindHFCache,
		Source: repo + "@" + rev + "/" + filepath.Base(t.Name()),
		Path:   t.Name(),
		Notes:  r.notes,
	}, true, nil
}

// snapshotDir picks the snapshot of a cached repo: the one refs/main names, else the first by
// name that holds a tokenizer file. It returns "" when there is none.
func snapshotDir(repoDir string) (dir, rev string) {
	snaps := filepath.Join(repoDir, "snapshots")
	if b, err := os.ReadFile(filepath.Join(repoDir, "refs", "main")); err == nil {
		rev := strings.TrimSpace(string(b))
		if safeName(rev) && hasTokenizerFile(filepath.Join(snaps, rev)) {
			return filepath.Join(snaps, rev), rev
		}
	}
	entries, err := os.ReadDir(snaps) // sorted by name: deterministic
	if err != nil {
		return "", ""
	}
	for _, e := range entries {
		if d := filepath.Join(snaps, e.Name()); hasTokenizerFile(d) {
			return d, e.Name()
		}
	}
	return "", ""
}

func safeName(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, `/\`)
}

// hasTokenizerFile reports whether dir holds a file Load(dir) would read (symlinks into
// blobs/ followed; a dangling link does not count).
func hasTokenizerFile(dir string) bool {
	for _, name := range dirFiles {
		if st, err := os.Stat(filepath.Join(dir, name)); err == nil && st.Mode().IsRegular() {
			return true
		}
	}
	return false
}

// download fetches repo's tokenizer.json (else tokenizer.model) from the Hub at revision main,
// checks that it loads, and stores it in the cache layout
// (snapshots/<commit>/<file>, refs/main), each file written atomically.
func (r *resolver) download(repo string) (*Tokenizer, Resolution, error) {
	ctx := r.opt.Context
	if ctx == nil {
		ctx = context.Background()
	}
	client := r.opt.HTTPClient
	if client == nil {
		timeout := r.opt.Timeout
		if timeout <= 0 {
			timeout = DefaultDownloadTimeout
		}
		client = &http.Client{
			Timeout: timeout,
			Transport: &http.Transport{
				Proxy:               http.ProxyFromEnvironment,
				DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
				TLSHandshakeTimeout: 5 * time.Second,
			},
		}
	}
	token := r.token()
	var last error
	for _, file := range dirFiles {
		url := r.endpoint + "/" + repo + "/resolve/main/" + file
		data, commit, status, err := fetch(ctx, client, url, token)
		if err != nil {
			return nil, Resolution{}, fmt.Errorf("%w: %s: %w", ErrDownloadFailed, url, err)
		}
		switch {
		case status == http.StatusNotFound:
			last = fmt.Errorf("%w: %s: HTTP 404", ErrDownloadFailed, url)
			continue
		case status == http.StatusUnauthorized || status == http.StatusForbidden:
			hint := "set HF_TOKEN"
			if token != "" {
				hint = "the token has no access; accept the repo's conditions on the Hub"
			}
			return nil, Resolution{}, fmt.Errorf("%w: %s: HTTP %d (%s)", ErrDownloadFailed, url, status, hint)
		case status != http.StatusOK:
			return nil, Resolution{}, fmt.Errorf("%w: %s: HTTP %d", ErrDownloadFailed, url, status)
		}
		parse := LoadHFJSON
		if file == "tokenizer.model" {
			parse = LoadModelProto
		}
		t, err := parse(bytes.NewReader(data))
		if err != nil {
			return nil, Resolution{}, fmt.Errorf("%w: %s: %w", ErrDownloadFailed, url, err)
		}
		if !commitPattern.MatchString(commit) {
			// A mirror that does not say which commit it served: name the snapshot after
			// the content, so the cache layout stays valid and a rerun finds it.
			sum := sha256.Sum256(data)
			commit = hex.EncodeToString(sum[:])[:40]
		}
		res := Resolution{Kind: KindDownload, Source: repo + "@" + commit + "/" + file, Notes: r.notes}
		path, err := r.store(repo, commit, file, data)
		if err != nil {
			res.Notes = append(res.Notes, "downloaded tokenizer not stored in the cache: "+err.Error())
		} else {
			res.Path = path
			t.name = path
		}
		return t, res, nil
	}
	return nil, Resolution{}, last
}

var commitPattern = regexp.MustCompile(`^[0-9a-f]{40}$`)

// token is $HF_TOKEN, else the token file huggingface-cli login writes ($HF_TOKEN_PATH, else
// $HF_HOME/token).
func (r *resolver) token() string {
	if t := strings.TrimSpace(r.getenv("HF_TOKEN")); t != "" {
		return t
	}
	p := r.getenv("HF_TOKEN_PATH")
	if p == "" {
		if h := r.hfHome(); h != "" {
			p = filepath.Join(h, "token")
		}
	}
	if p == "" {
		return ""
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// fetch GETs url. The Hub answers resolve/ with a redirect to its CDN for large files and
// names the commit in X-Repo-Commit of that first answer, so the header is taken from
// whichever response in the chain carries it.
func fetch(ctx context.Context, client *http.Client, url, token string) (data []byte, commit string, status int, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, "", 0, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("User-Agent", "ktoloader")
	c := *client
	prev := client.CheckRedirect
	c.CheckRedirect = func(next *http.Request, via []*http.Request) error {
		if next.Response != nil && commit == "" {
			commit = next.Response.Header.Get("X-Repo-Commit")
		}
		if prev != nil {
			return prev(next, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, "", 0, err
	}
	defer resp.Body.Close()
	if h := resp.Header.Get("X-Repo-Commit"); h != "" {
		commit = h
	}
	if resp.StatusCode != http.StatusOK {
		return nil, commit, resp.StatusCode, nil
	}
	data, err = io.ReadAll(io.LimitReader(resp.Body, maxDownloadBytes+1))
	if err != nil {
		return nil, "", 0, err
	}
	if len(data) > maxDownloadBytes {
		return nil, "", 0, fmt.Errorf("larger than %d bytes", maxDownloadBytes)
	}
	return data, commit, resp.StatusCode, nil
}

// store writes data as snapshots/<commit>/<file> of repo's cache folder and points refs/main
// at commit. Plain files, not blob symlinks: huggingface_hub reads both.
func (r *resolver) store(repo, commit, file string, data []byte) (string, error) {
	if r.cacheDir == "" {
		return "", errors.New("no cache folder (set HF_HUB_CACHE or HF_HOME)")
	}
	dir := r.repoDir(repo)
	snap := filepath.Join(dir, "snapshots", commit)
	if err := os.MkdirAll(snap, 0o755); err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Join(dir, "refs"), 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(snap, file)
	if err := writeAtomic(path, data); err != nil {
		return "", err
	}
	if err := writeAtomic(filepath.Join(dir, "refs", "main"), []byte(commit)); err != nil {
		return "", err
	}
	return path, nil
}

// writeAtomic writes a temporary file beside path, syncs it and renames it into place, so a
// crash never leaves a truncated tokenizer that a later run would trust.
func writeAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
