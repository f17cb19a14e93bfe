package tokenize

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ktoloader/ktoloader/internal/hub"
	"github.com/ktoloader/ktoloader/testdata"
	"github.com/ktoloader/ktoloader/tokenize/bpe"
)

// The Hub client (cache layout, environment, downloads) lives in internal/hub, shared with
// the model-weights resolver; this file only decides which tokenizer to take.

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
const DefaultEndpoint = hub.DefaultEndpoint

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
//     one; or, when no such path exists, a Hub repo id "org/name[@rev]", looked up in the
//     Hugging Face cache and else downloaded.
//  2. $KTOLOADER_TOKENIZER, the same way.
//  3. The Hugging Face cache ($HF_HUB_CACHE, else $HF_HOME/hub, else
//     ~/.cache/huggingface/hub): the first of DefaultRepos with a snapshot holding a
//     tokenizer file (refs/main names the snapshot; without it the first snapshot by name;
//     a repo named with "@rev" takes only that revision's snapshot).
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
		t, res, found, err := r.fromCache(hub.Repo{ID: repo, Rev: hub.DefaultRevision})
		if found || err != nil {
			return t, res, err
		}
	}
	if r.hub.Offline() {
		r.note("download skipped: offline (HF_HUB_OFFLINE or --offline)")
	} else {
		t, res, err := r.download(hub.Repo{ID: DefaultRepos[0], Rev: hub.DefaultRevision})
		if err == nil {
			return t, res, nil
		}
		r.note("%v", err)
	}
	if opt.NoDemo {
		return nil, Resolution{Notes: r.notes}, fmt.Errorf("%w: none given, none in the Hugging Face cache (%s), no download (%s)",
			ErrTokenizerNotFound, r.hub.CacheDir(), strings.Join(r.notes, "; "))
	}
	t, err := LoadModelProto(bytes.NewReader(testdata.DemoTokenizerModel))
	if err != nil {
		return nil, Resolution{}, fmt.Errorf("embedded demo tokenizer: %w", err)
	}
	return t, Resolution{Kind: KindDemo, Source: testdata.DemoTokenizerName, Demo: true, Notes: r.notes}, nil
}

type resolver struct {
	opt   ResolveOptions
	hub   *hub.Client
	notes []string
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
	timeout := r.opt.Timeout
	if timeout <= 0 {
		timeout = DefaultDownloadTimeout
	}
	r.hub = hub.New(hub.Options{
		Getenv:     r.opt.Getenv,
		Offline:    r.opt.Offline,
		HTTPClient: r.opt.HTTPClient,
		Timeout:    timeout,
		Context:    r.opt.Context,
	})
}

// named resolves a tokenizer the user named: a path when it exists, else a repo id.
func (r *resolver) named(spec, kind string) (*Tokenizer, Resolution, error) {
	what := "--tokenizer"
	if kind == KindEnv {
		what = "$" + EnvTokenizer
	}
	_, statErr := os.Stat(spec)
	var repo hub.Repo
	switch {
	case statErr == nil:
		t, err := Load(spec)
		if err != nil {
			return nil, Resolution{}, fmt.Errorf("%s %s: %w", what, spec, err)
		}
		return t, Resolution{Kind: kind, Source: spec, Path: t.Name()}, nil
	case !errors.Is(statErr, os.ErrNotExist):
		return nil, Resolution{}, fmt.Errorf("%s: %w", what, statErr)
	default:
		var err error
		if repo, err = hub.ParseRepo(spec); err != nil {
			return nil, Resolution{}, fmt.Errorf("%s %s: %w: no such file or directory", what, spec, ErrTokenizerNotFound)
		}
	}
	t, res, found, err := r.fromCache(repo)
	if found || err != nil {
		if err != nil {
			err = fmt.Errorf("%s %s: %w", what, spec, err)
		}
		return t, res, err
	}
	if r.hub.Offline() {
		return nil, Resolution{}, fmt.Errorf("%s %s: %w: no such file, not in the Hugging Face cache (%s), and offline",
			what, spec, ErrTokenizerNotFound, r.hub.CacheDir())
	}
	t, res, err = r.download(repo)
	if err != nil {
		return nil, Resolution{}, fmt.Errorf("%s %s: no such file, not in the Hugging Face cache (%s): %w", what, spec, r.hub.CacheDir(), err)
	}
	return t, res, nil
}

// fromCache loads repo's tokenizer from the Hugging Face cache. found is false when the cache
// has no snapshot with a tokenizer file; a file that is there but does not load is an error.
func (r *resolver) fromCache(repo hub.Repo) (t *Tokenizer, res Resolution, found bool, err error) {
	dir, rev := r.hub.Snapshot(repo, hasTokenizerFile)
	if dir == "" {
		return nil, Resolution{}, false, nil
	}
	t, err = Load(dir)
	if err != nil {
		return nil, Resolution{}, true, fmt.Errorf("Hugging Face cache, %s@%s: %w", repo.ID, rev, err)
	}
	return t, Resolution{
		Kind:   KindHFCache,
		Source: repo.ID + "@" + rev + "/" + filepath.Base(t.Name()),
		Path:   t.Name(),
		Notes:  r.notes,
	}, true, nil
}

// hasTokenizerFile reports whether dir holds a file Load(dir) would read (symlinks into
// blobs/ followed; a dangling link does not count).
func hasTokenizerFile(dir string) bool {
	for _, name := range bpe.DirFiles {
		if hub.IsFile(filepath.Join(dir, name)) {
			return true
		}
	}
	return false
}

// download fetches repo's tokenizer.json (else tokenizer.model) from the Hub, checks that it
// loads before it enters the cache, and stores it in the cache layout.
func (r *resolver) download(repo hub.Repo) (*Tokenizer, Resolution, error) {
	var last error
	for _, file := range bpe.DirFiles {
		parse := LoadHFJSON
		if file == "tokenizer.model" {
			parse = LoadModelProto
		}
		var t *Tokenizer
		check := func(path string) error {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			t, err = parse(bytes.NewReader(b))
			return err
		}
		f, err := r.hub.Download(repo, file, hub.DownloadOptions{MaxBytes: maxDownloadBytes, Check: check})
		if errors.Is(err, hub.ErrNotFound) {
			last = fmt.Errorf("%w: %w", ErrDownloadFailed, err)
			continue
		}
		if err != nil {
			return nil, Resolution{}, fmt.Errorf("%w: %w", ErrDownloadFailed, err)
		}
		res := Resolution{Kind: KindDownload, Source: repo.ID + "@" + f.Commit + "/" + file, Notes: r.notes}
		if f.Path == "" {
			res.Notes = append(res.Notes, "downloaded tokenizer not stored in the cache: no cache folder (set HF_HUB_CACHE or HF_HOME)")
		} else {
			res.Path = f.Path
			t.SetName(f.Path)
		}
		return t, res, nil
	}
	return nil, Resolution{}, last
}
