package hub

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestParseRepo(t *testing.T) {
	const c = "0123456789abcdef0123456789abcdef01234567"
	for _, tc := range []struct {
		spec   string
		want   Repo
		commit bool
	}{
		{"mistralai/Mistral-7B-v0.3", Repo{ID: "mistralai/Mistral-7B-v0.3", Rev: "main"}, false},
		{"acme/m@v1.0", Repo{ID: "acme/m", Rev: "v1.0", Pinned: true}, false},
		{"acme/m@main", Repo{ID: "acme/m", Rev: "main", Pinned: true}, false},
		{"acme/m@refs/pr/1", Repo{ID: "acme/m", Rev: "refs/pr/1", Pinned: true}, false},
		{"acme/m@" + c, Repo{ID: "acme/m", Rev: c, Pinned: true}, true},
		// 40 hex digits in upper case are a branch name to the Hub, not a commit.
		{"acme/m@0123456789ABCDEF0123456789ABCDEF01234567", Repo{ID: "acme/m", Rev: "0123456789ABCDEF0123456789ABCDEF01234567", Pinned: true}, false},
	} {
		got, err := ParseRepo(tc.spec)
		if err != nil || got != tc.want || got.IsCommit() != tc.commit {
			t.Errorf("ParseRepo(%q) = %+v (commit %v), %v; want %+v (commit %v)", tc.spec, got, got.IsCommit(), err, tc.want, tc.commit)
		}
		if got.String() != tc.spec {
			t.Errorf("%q: String() = %q", tc.spec, got.String())
		}
	}
	for _, bad := range []string{"", "mistral", "a/b/c", "/b", "a/", "a/b@", "a/b@x y", "a/b@../x", "a/b@refs/../x",
		"a/b@x/", "a--b/c", "a/../b", "./b", "a/b@c@d", `a\b/c`} {
		if r, err := ParseRepo(bad); !errors.Is(err, ErrBadRepo) {
			t.Errorf("ParseRepo(%q) = %+v, %v; want ErrBadRepo", bad, r, err)
		}
	}
}

func TestCacheDir(t *testing.T) {
	for _, tc := range []struct {
		name string
		vars map[string]string
		want string
	}{
		{"HF_HUB_CACHE", map[string]string{"HF_HUB_CACHE": "/r/c", "HF_HOME": "/r/elsewhere", "HOME": "/r/home"}, "/r/c"},
		{"HUGGINGFACE_HUB_CACHE", map[string]string{"HUGGINGFACE_HUB_CACHE": "/r/old", "HF_HOME": "/r/hf"}, "/r/old"},
		{"HF_HOME", map[string]string{"HF_HOME": "/r/hf", "XDG_CACHE_HOME": "/r/xdg", "HOME": "/r/home"}, "/r/hf/hub"},
		{"XDG_CACHE_HOME", map[string]string{"XDG_CACHE_HOME": "/r/xdg", "HOME": "/r/home"}, "/r/xdg/huggingface/hub"},
		{"HOME", map[string]string{"HOME": "/r/home"}, "/r/home/.cache/huggingface/hub"},
		{"nothing", nil, ""},
	} {
		if got := New(Options{Getenv: env(tc.vars)}).CacheDir(); got != filepath.FromSlash(tc.want) {
			t.Errorf("%s: CacheDir = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestOfflineAndEndpoint(t *testing.T) {
	for v, want := range map[string]bool{"1": true, "True": true, "yes": true, "ON": true, "0": false, "": false, "no": false} {
		if got := New(Options{Getenv: env(map[string]string{"HF_HUB_OFFLINE": v})}).Offline(); got != want {
			t.Errorf("HF_HUB_OFFLINE=%q: Offline = %v", v, got)
		}
	}
	if !New(Options{Getenv: env(nil), Offline: true}).Offline() {
		t.Error("Options.Offline ignored")
	}
	c := New(Options{Getenv: env(map[string]string{"HF_ENDPOINT": "http://mirror.example/"})})
	if got := c.FileURL(Repo{ID: "acme/m"}, "refs/pr/1", "sub dir/model.safetensors"); got != "http://mirror.example/acme/m/resolve/refs%2Fpr%2F1/sub%20dir/model.safetensors" {
		t.Errorf("FileURL = %q", got)
	}
	if got := New(Options{Getenv: env(nil)}).Endpoint(); got != DefaultEndpoint {
		t.Errorf("Endpoint = %q", got)
	}
}

func TestToken(t *testing.T) {
	home := t.TempDir()
	if err := os.WriteFile(filepath.Join(home, "token"), []byte("hf_from_home\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "tok")
	if err := os.WriteFile(other, []byte(" hf_from_path "), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		vars map[string]string
		want string
	}{
		{map[string]string{"HF_TOKEN": "hf_env", "HF_HOME": home}, "hf_env"},
		{map[string]string{"HF_HOME": home}, "hf_from_home"},
		{map[string]string{"HF_HOME": home, "HF_TOKEN_PATH": other}, "hf_from_path"},
		{map[string]string{"HF_HOME": t.TempDir()}, ""},
	} {
		if got := New(Options{Getenv: env(tc.vars)}).token; got != tc.want {
			t.Errorf("%v: token %q, want %q", tc.vars, got, tc.want)
		}
	}
}

func TestSnapshot(t *testing.T) {
	const (
		a = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		b = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
		c = "cccccccccccccccccccccccccccccccccccccccc"
	)
	cache := t.TempDir()
	repo := "acme/m"
	for _, commit := range []string{a, b, c} {
		cacheFile(t, cache, repo, commit, "config.json", []byte(`{"c":"`+commit+`"}`))
	}
	cacheRef(t, cache, repo, "main", b)
	cacheRef(t, cache, repo, "refs/pr/7", c)
	cl := New(Options{Getenv: env(map[string]string{"HF_HUB_CACHE": cache})})
	has := func(d string) bool { return IsFile(filepath.Join(d, "config.json")) }
	hasNot := func(d string) bool { return filepath.Base(d) != b && has(d) }
	for _, tc := range []struct {
		spec string
		ok   func(string) bool
		want string
	}{
		{"acme/m", has, b},                  // refs/main
		{"acme/m@main", has, b},             // pinned main: same
		{"acme/m@refs/pr/7", has, c},        // nested ref
		{"acme/m@" + a, has, a},             // a commit names the snapshot
		{"acme/m", hasNot, a},               // refs/main's fails the test: first by name
		{"acme/m@main", hasNot, ""},         // pinned: no fallback
		{"acme/m@v2", has, ""},              // unknown ref
		{"acme/m@" + c[:39] + "d", has, ""}, // unknown commit
		{"acme/other", has, ""},
	} {
		r, err := ParseRepo(tc.spec)
		if err != nil {
			t.Fatal(err)
		}
		dir, commit := cl.Snapshot(r, tc.ok)
		if commit != tc.want || (tc.want != "" && dir != filepath.Join(cl.RepoDir(repo), "snapshots", tc.want)) {
			t.Errorf("Snapshot(%s) = %q, %q; want commit %q", tc.spec, dir, commit, tc.want)
		}
	}
	// A dangling link into blobs/ is no file.
	link := cacheFile(t, cache, repo, a, "model.safetensors", []byte("w"))
	if err := os.Remove(filepath.Join(cl.RepoDir(repo), "blobs", sha256Hex([]byte("w")))); err != nil {
		t.Fatal(err)
	}
	if IsFile(link) {
		t.Error("IsFile true for a dangling symlink")
	}
}
