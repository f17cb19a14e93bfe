// Package hub finds Hugging Face Hub repos in the local Hugging Face cache and, unless offline,
// downloads missing files into that cache in the layout huggingface_hub itself uses
// (models--org--name/{blobs,snapshots/COMMIT,refs/REV}), so both tools share one cache. It
// serves the tokenizer resolver (package tokenize) and the model-weights resolver
// (ResolveModel, for the trainer). Downloads stream to a temporary file beside the cache entry
// and are renamed into place, so a crash or a truncated body never leaves a file a later run
// would trust.
//
// It exists because go-huggingface's hub client does not work offline and ignores
// $HF_HOME/$HF_HUB_CACHE (DEPENDENCIES.md).
//
// Imports: the standard library only. Callers that need to check a file's content (the
// tokenizer) pass a check function; hub itself knows nothing about tokenizers or tensors.
package hub

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// DefaultEndpoint is the Hub's base URL; $HF_ENDPOINT overrides it (mirrors, tests).
const DefaultEndpoint = "https://huggingface.co"

// DefaultRevision is the revision of a repo id given without "@rev".
const DefaultRevision = "main"

// DefaultIdleTimeout bounds how long a download may receive nothing before it is abandoned.
// Weights take many minutes in total, so a whole-download timeout would be wrong for them;
// a stalled connection is what must not hang the trainer.
const DefaultIdleTimeout = 2 * time.Minute

// Options tunes a Client. The zero value reads the real environment and may download.
type Options struct {
	// Getenv reads environment variables; nil means os.Getenv. Tests pass their own.
	Getenv func(string) string
	// Offline forbids the network, as $HF_HUB_OFFLINE=1 does.
	Offline bool
	// HTTPClient does the downloads; nil means a client with Timeout.
	HTTPClient *http.Client
	// Timeout bounds one file's download, connection and body together; 0 means none.
	Timeout time.Duration
	// IdleTimeout abandons a download that receives nothing for this long; 0 means
	// DefaultIdleTimeout.
	IdleTimeout time.Duration
	// Context cancels downloads; nil means context.Background().
	Context context.Context
	// Progress, when not nil, is told about each file being downloaded: once at the start
	// (done 0), after each chunk of a few MiB and at the end. total is -1 when unknown.
	Progress func(file string, done, total int64)
}

// Client is a resolved view of the environment: where the cache is, which endpoint and token
// to use, and whether the network may be used. Its methods are safe for concurrent use.
type Client struct {
	opt      Options
	cacheDir string
	endpoint string
	offline  bool
	token    string
	http     *http.Client
}

// New reads the environment once (Options.Getenv) and returns a Client.
func New(opt Options) *Client {
	c := &Client{opt: opt}
	c.cacheDir = c.hubCacheDir()
	c.endpoint = strings.TrimRight(c.getenv("HF_ENDPOINT"), "/")
	if c.endpoint == "" {
		c.endpoint = DefaultEndpoint
	}
	c.offline = opt.Offline || isTrue(c.getenv("HF_HUB_OFFLINE"))
	c.token = c.readToken()
	c.http = opt.HTTPClient
	if c.http == nil {
		c.http = newHTTPClient(opt.Timeout)
	}
	return c
}

// CacheDir is the hub cache folder ($HF_HUB_CACHE, else $HF_HOME/hub, else
// $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub); "" when none can be named.
func (c *Client) CacheDir() string { return c.cacheDir }

// Offline reports whether the network is off limits (Options.Offline or $HF_HUB_OFFLINE).
func (c *Client) Offline() bool { return c.offline }

// Endpoint is the Hub's base URL without a trailing slash.
func (c *Client) Endpoint() string { return c.endpoint }

// HasToken reports whether requests carry a token ($HF_TOKEN or the token file).
func (c *Client) HasToken() bool { return c.token != "" }

func (c *Client) getenv(k string) string {
	if c.opt.Getenv != nil {
		return c.opt.Getenv(k)
	}
	return os.Getenv(k)
}

func (c *Client) context() context.Context {
	if c.opt.Context != nil {
		return c.opt.Context
	}
	return context.Background()
}

// hfHome follows huggingface_hub: $HF_HOME, else $XDG_CACHE_HOME/huggingface, else
// ~/.cache/huggingface.
func (c *Client) hfHome() string {
	if h := c.getenv("HF_HOME"); h != "" {
		return h
	}
	if x := c.getenv("XDG_CACHE_HOME"); x != "" {
		return filepath.Join(x, "huggingface")
	}
	home := c.getenv("HOME")
	if home == "" && c.opt.Getenv == nil {
		home, _ = os.UserHomeDir()
	}
	if home == "" {
		return ""
	}
	return filepath.Join(home, ".cache", "huggingface")
}

func (c *Client) hubCacheDir() string {
	for _, k := range []string{"HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"} {
		if d := c.getenv(k); d != "" {
			return d
		}
	}
	if h := c.hfHome(); h != "" {
		return filepath.Join(h, "hub")
	}
	return ""
}

// readToken is $HF_TOKEN, else the token file huggingface-cli login writes ($HF_TOKEN_PATH,
// else $HF_HOME/token).
func (c *Client) readToken() string {
	if t := strings.TrimSpace(c.getenv("HF_TOKEN")); t != "" {
		return t
	}
	p := c.getenv("HF_TOKEN_PATH")
	if p == "" {
		if h := c.hfHome(); h != "" {
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

// isTrue reads a boolean environment value as huggingface_hub does.
func isTrue(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "1", "true", "yes", "on":
		return true
	}
	return false
}

// Repo is a parsed repo spec "org/name[@rev]".
type Repo struct {
	ID  string // "org/name"
	Rev string // a branch, tag or commit; DefaultRevision when the spec named none
	// Pinned is true when the spec named the revision ("@rev"), even "@main": the cache
	// lookup then takes only that revision's snapshot, never another one.
	Pinned bool
}

// String is the spec back: "org/name" or "org/name@rev".
func (r Repo) String() string {
	if !r.Pinned {
		return r.ID
	}
	return r.ID + "@" + r.Rev
}

// IsCommit reports whether Rev is a full commit hash (40 lowercase hex digits), which names
// a snapshot directly, with no refs/ file.
func (r Repo) IsCommit() bool { return IsCommit(r.Rev) }

// IsCommit reports whether s is a full commit hash.
func IsCommit(s string) bool { return commitPattern.MatchString(s) }

var (
	commitPattern = regexp.MustCompile(`^[0-9a-f]{40}$`)
	// repoIDPattern is a Hub model id "org/name" (no nested path).
	repoIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	// revPattern is a branch, tag or commit; "refs/pr/1" style names keep their slashes, as
	// huggingface_hub stores them under refs/.
	revPattern = regexp.MustCompile(`^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$`)
)

// IsRepoID reports whether s is a bare repo id "org/name" (no revision).
func IsRepoID(s string) bool {
	return repoIDPattern.MatchString(s) && !strings.Contains(s, "..") && !strings.Contains(s, "--")
}

// LooksLikeRepo reports whether s parses as "org/name[@rev]".
func LooksLikeRepo(s string) bool {
	_, err := ParseRepo(s)
	return err == nil
}

// ParseRepo parses "org/name[@rev]". The error wraps ErrBadRepo and says which part is wrong.
func ParseRepo(spec string) (Repo, error) {
	id, rev, pinned := strings.Cut(spec, "@")
	if !IsRepoID(id) {
		return Repo{}, fmt.Errorf("%w: %q: want org/name[@revision]", ErrBadRepo, spec)
	}
	if !pinned {
		return Repo{ID: id, Rev: DefaultRevision}, nil
	}
	if !revPattern.MatchString(rev) || badRevSegment(rev) {
		return Repo{}, fmt.Errorf("%w: %q: bad revision %q", ErrBadRepo, spec, rev)
	}
	return Repo{ID: id, Rev: rev, Pinned: true}, nil
}

func badRevSegment(rev string) bool {
	for seg := range strings.SplitSeq(rev, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// RepoDir is the cache folder of a model repo: CacheDir/models--org--name.
func (c *Client) RepoDir(id string) string {
	return filepath.Join(c.cacheDir, "models--"+strings.ReplaceAll(id, "/", "--"))
}

// Snapshot finds the cached snapshot of repo for which ok(dir) holds: for a commit, that
// snapshot; else the one refs/REV names. A repo whose revision was not pinned falls back to
// the first snapshot by name that satisfies ok (deterministic), as a cache copied between
// machines often has no refs/. It returns "" when there is none.
func (c *Client) Snapshot(repo Repo, ok func(dir string) bool) (dir, commit string) {
	if c.cacheDir == "" {
		return "", ""
	}
	rd := c.RepoDir(repo.ID)
	snaps := filepath.Join(rd, "snapshots")
	if commit := c.RefCommit(repo); commit != "" {
		if d := filepath.Join(snaps, commit); ok(d) {
			return d, commit
		}
	}
	if repo.Pinned {
		return "", ""
	}
	entries, err := os.ReadDir(snaps) // sorted by name
	if err != nil {
		return "", ""
	}
	for _, e := range entries {
		if d := filepath.Join(snaps, e.Name()); safeName(e.Name()) && ok(d) {
			return d, e.Name()
		}
	}
	return "", ""
}

// RefCommit is the commit repo's revision names in the cache: the revision itself when it is
// a commit, else the content of refs/REV; "" when the cache does not know it.
func (c *Client) RefCommit(repo Repo) string {
	if repo.IsCommit() {
		return repo.Rev
	}
	if c.cacheDir == "" {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(c.RepoDir(repo.ID), "refs", filepath.FromSlash(repo.Rev)))
	if err != nil {
		return ""
	}
	if rev := strings.TrimSpace(string(b)); safeName(rev) {
		return rev
	}
	return ""
}

func safeName(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, `/\`) && !strings.HasPrefix(s, ".")
}

// IsFile reports whether path is a regular file, symlinks followed (a dangling link into
// blobs/ is no file).
func IsFile(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}

// Errors. Each error from this package wraps one of these and is an *Error naming the repo,
// revision, file and, for downloads, the URL and HTTP status.
var (
	ErrBadRepo      = errors.New("not a Hugging Face repo id")
	ErrNotCached    = errors.New("not in the Hugging Face cache")          // and offline
	ErrNotFound     = errors.New("not on the Hub")                         // HTTP 404
	ErrUnauthorized = errors.New("not authorised")                         // HTTP 401/403: gated or private
	ErrDownload     = errors.New("download failed")                        // network, HTTP status, size, check
	ErrNoCache      = errors.New("no Hugging Face cache folder")           // nothing to store into
	ErrIncomplete   = errors.New("model snapshot incomplete")              // offline, files missing
	ErrBadIndex     = errors.New("malformed model.safetensors.index.json") // bad weight_map
	ErrNoModel      = errors.New("no Hugging Face model")                  // no config.json, or native weights only
)

// Error is what the package returns: which repo, file and why.
type Error struct {
	Kind   error  // one of the Err* sentinels
	Repo   string // "org/name@rev" or a local directory
	File   string // file within the repo, "" when none
	URL    string // the request, for download errors
	Status int    // HTTP status, 0 when none
	Reason string // for people
	Err    error  // underlying cause, may be nil
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Repo)
	if e.File != "" {
		b.WriteString(": " + e.File)
	}
	b.WriteString(": " + e.Kind.Error())
	if e.URL != "" {
		b.WriteString(": " + e.URL)
	}
	if e.Status != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.Status)
	}
	if e.Reason != "" {
		b.WriteString(" (" + e.Reason + ")")
	}
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	return b.String()
}

// Unwrap gives both the sentinel and the cause to errors.Is / errors.As.
func (e *Error) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Kind, e.Err}
	}
	return []error{e.Kind}
}
