package hub

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// File is one downloaded file.
type File struct {
	// Path is snapshots/COMMIT/NAME in the cache; "" when there is no cache folder (the
	// content was only shown to DownloadOptions.Check).
	Path   string
	Commit string // the snapshot it belongs to
	Size   int64
}

// DownloadOptions tunes one Download.
type DownloadOptions struct {
	// MaxBytes refuses a larger file (from its announced size, else while reading); 0 means
	// no limit (weights).
	MaxBytes int64
	// Check, when not nil, sees the complete temporary file before it enters the cache; an
	// error keeps it out (the tokenizer refuses an HTML error page served as 200).
	Check func(path string) error
	// Snapshot names the snapshot to store into when the caller already knows it (the other
	// files of one model); "" takes the commit the Hub names.
	Snapshot string
}

// errStalled cancels a download that received nothing for IdleTimeout.
var errStalled = errors.New("no data received within the idle timeout")

func newHTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			TLSHandshakeTimeout:   5 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
		},
	}
}

// FileURL is where the Hub serves file of repo at rev.
func (c *Client) FileURL(repo Repo, rev, file string) string {
	parts := strings.Split(file, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return c.endpoint + "/" + repo.ID + "/resolve/" + url.PathEscape(rev) + "/" + strings.Join(parts, "/")
}

// Download fetches file of repo at repo.Rev (or at o.Snapshot when set) and stores it in the
// cache: the content in blobs/ under its ETag, snapshots/COMMIT/file a relative symlink to it
// (a plain file where symlinks cannot be made), and refs/REV = COMMIT when the revision is
// not a commit. The body streams to a per-download temporary file in blobs/; it is checked
// against Content-Length / X-Linked-Size, against X-Linked-Etag when that is a sha256, and by
// o.Check, then renamed into place. A failed download leaves nothing behind, not even the
// folders it created.
func (c *Client) Download(repo Repo, file string, o DownloadOptions) (File, error) {
	rev := repo.Rev
	if o.Snapshot != "" && IsCommit(o.Snapshot) {
		rev = o.Snapshot
	}
	fail := func(kind error, u string, status int, reason string, err error) (File, error) {
		return File{}, &Error{Kind: kind, Repo: repo.ID + "@" + repo.Rev, File: file, URL: u, Status: status, Reason: reason, Err: err}
	}
	if !safePath(file) {
		return fail(ErrDownload, "", 0, "unsafe file name", nil)
	}
	if c.offline {
		return fail(ErrNotCached, "", 0, "offline (HF_HUB_OFFLINE or --offline)", nil)
	}
	u := c.FileURL(repo, rev, file)

	idle := c.opt.IdleTimeout
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	ctx, cancel := context.WithCancelCause(c.context())
	defer cancel(nil)
	timer := time.AfterFunc(idle, func() { cancel(errStalled) })
	defer timer.Stop()

	resp, meta, err := c.get(ctx, u)
	if err != nil {
		if cause := context.Cause(ctx); cause == errStalled {
			err = cause
		}
		return fail(ErrDownload, u, 0, "", err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return fail(ErrNotFound, u, resp.StatusCode, hubReason(resp), nil)
	case http.StatusUnauthorized, http.StatusForbidden:
		hint := "gated or private repo: set HF_TOKEN"
		if c.token != "" {
			hint = "the token has no access; accept the repo's conditions on the Hub"
		}
		if r := hubReason(resp); r != "" {
			hint = r + "; " + hint
		}
		return fail(ErrUnauthorized, u, resp.StatusCode, hint, nil)
	default:
		return fail(ErrDownload, u, resp.StatusCode, hubReason(resp), nil)
	}

	want := int64(-1)
	if meta.linkedSize >= 0 {
		want = meta.linkedSize
		if resp.ContentLength >= 0 && resp.ContentLength != want {
			return fail(ErrDownload, u, 0, fmt.Sprintf("Content-Length %d, X-Linked-Size %d", resp.ContentLength, want), nil)
		}
	} else if resp.ContentLength >= 0 {
		want = resp.ContentLength
	}
	if o.MaxBytes > 0 && want > o.MaxBytes {
		return fail(ErrDownload, u, 0, fmt.Sprintf("larger than %d bytes", o.MaxBytes), nil)
	}

	commit := meta.commit
	switch {
	case o.Snapshot != "":
		if commit != "" && commit != o.Snapshot && IsCommit(o.Snapshot) {
			return fail(ErrDownload, u, 0, fmt.Sprintf("served commit %s, want %s", commit, o.Snapshot), nil)
		}
		commit = o.Snapshot
	case repo.IsCommit():
		commit = repo.Rev
	}

	st, err := c.newStore(repo.ID)
	if err != nil {
		return fail(ErrDownload, u, 0, "", err)
	}
	ok := false
	defer func() {
		if !ok {
			st.abort()
		}
	}()
	size, sum, err := st.receive(file, resp.Body, want, o.MaxBytes, timer, idle, c.progress(file))
	if err != nil {
		if cause := context.Cause(ctx); cause == errStalled {
			err = cause
		}
		return fail(ErrDownload, u, 0, "", err)
	}
	if lfs := meta.etag; sha256Pattern.MatchString(lfs) && lfs != sum {
		return fail(ErrDownload, u, 0, fmt.Sprintf("sha256 %s, X-Linked-Etag %s", sum, lfs), nil)
	}
	if o.Check != nil {
		if err := o.Check(st.tmp); err != nil {
			return fail(ErrDownload, u, 0, "", err)
		}
	}
	if commit == "" {
		// A mirror that does not say which commit it served: name the snapshot after the
		// content, so the cache layout stays valid and a rerun finds it.
		commit = sum[:40]
	}
	if c.cacheDir == "" {
		return File{Commit: commit, Size: size}, nil // the deferred abort removes the temporary file
	}
	blob := meta.etag
	if !blobPattern.MatchString(blob) {
		blob = sum
	}
	var refRev string
	if !repo.IsCommit() && o.Snapshot == "" {
		refRev = repo.Rev
	}
	path, err := st.commit(blob, commit, file, refRev)
	if err != nil {
		return fail(ErrDownload, u, 0, "storing in the cache", err)
	}
	ok = true
	return File{Path: path, Commit: commit, Size: size}, nil
}

func (c *Client) progress(file string) func(done, total int64) {
	if c.opt.Progress == nil {
		return nil
	}
	return func(done, total int64) { c.opt.Progress(file, done, total) }
}

var (
	sha256Pattern = regexp.MustCompile(`^[0-9a-f]{64}$`)
	// blobPattern is an ETag fit for a blob file name (the Hub's are hex digests); others
	// are replaced by the content's sha256.
	blobPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{8,128}$`)
)

// safePath is a relative file path within a repo: no empty, ".", ".." or hidden segments.
func safePath(p string) bool {
	if p == "" || strings.Contains(p, `\`) {
		return false
	}
	for seg := range strings.SplitSeq(p, "/") {
		if !safeName(seg) {
			return false
		}
	}
	return true
}

// hubReason is the Hub's own explanation of an error answer (X-Error-Code, X-Error-Message).
func hubReason(resp *http.Response) string {
	code, msg := resp.Header.Get("X-Error-Code"), resp.Header.Get("X-Error-Message")
	switch {
	case code != "" && msg != "":
		return code + ": " + msg
	case code != "":
		return code
	}
	return msg
}

// respMeta is what the Hub says about a file in the first answer of the redirect chain (the
// CDN's answer does not repeat it).
type respMeta struct {
	commit     string
	etag       string // X-Linked-Etag (LFS: the sha256), else ETag, unquoted
	linkedSize int64  // X-Linked-Size, -1 when absent
}

func (m *respMeta) take(h http.Header) {
	if v := h.Get("X-Repo-Commit"); v != "" && m.commit == "" && IsCommit(v) {
		m.commit = v
	}
	if m.etag == "" {
		e := h.Get("X-Linked-Etag")
		if e == "" {
			e = h.Get("ETag")
		}
		m.etag = strings.Trim(strings.TrimPrefix(e, "W/"), `"`)
	}
	if v := h.Get("X-Linked-Size"); v != "" && m.linkedSize < 0 {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			m.linkedSize = n
		}
	}
}

// get GETs u, following redirects (the Hub sends large files to its CDN) and collecting the
// Hub's headers from whichever response carries them.
func (c *Client) get(ctx context.Context, u string) (*http.Response, *respMeta, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	req.Header.Set("User-Agent", "ktoloader")
	meta := &respMeta{linkedSize: -1}
	hc := *c.http
	prev := c.http.CheckRedirect
	hc.CheckRedirect = func(next *http.Request, via []*http.Request) error {
		if next.Response != nil {
			meta.take(next.Response.Header)
		}
		if prev != nil {
			return prev(next, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode == http.StatusOK {
		meta.take(resp.Header)
	} else if v := resp.Header.Get("X-Repo-Commit"); meta.commit == "" && IsCommit(v) {
		meta.commit = v
	}
	return resp, meta, nil
}

// store writes one download into a repo's cache folder. It remembers which folders it
// created so that a failed download removes them again (a failed first download leaves the
// cache as it was).
type store struct {
	repoDir string
	created []string // folders this store made, outermost first
	tmp     string   // temporary file, "" once renamed or removed
}

func (c *Client) newStore(id string) (*store, error) {
	if c.cacheDir == "" {
		return &store{}, nil
	}
	return &store{repoDir: c.RepoDir(id)}, nil
}

// mkdir makes dir and its missing parents, recording the ones it made.
func (s *store) mkdir(dir string) error {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		missing = append(missing, d)
		if d == filepath.Dir(d) || d == filepath.Dir(s.repoDir) {
			break
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i := len(missing) - 1; i >= 0; i-- {
		s.created = append(s.created, missing[i])
	}
	return nil
}

// receive streams body into a new temporary file and returns its size and sha256. The name
// holds the process id and a random part, so concurrent downloads (threads or processes)
// never share one.
func (s *store) receive(file string, body io.Reader, want, max int64, timer *time.Timer, idle time.Duration, progress func(done, total int64)) (int64, string, error) {
	dir := os.TempDir()
	if s.repoDir != "" {
		dir = filepath.Join(s.repoDir, "blobs")
	}
	var f *os.File
	var err error
	for try := 0; try < 2; try++ { // a concurrent failed download may remove a folder it made
		if s.repoDir != "" {
			if err = s.mkdir(dir); err != nil {
				return 0, "", err
			}
		}
		f, err = os.CreateTemp(dir, fmt.Sprintf(".%s.%d.tmp-*", filepath.Base(file), os.Getpid()))
		if !errors.Is(err, os.ErrNotExist) {
			break
		}
	}
	if err != nil {
		return 0, "", err
	}
	s.tmp = f.Name()
	h := sha256.New()
	w := &countingWriter{w: io.MultiWriter(f, h), timer: timer, idle: idle, progress: progress, total: want}
	if progress != nil {
		progress(0, want)
	}
	src := body
	if max > 0 {
		src = io.LimitReader(body, max+1)
	}
	_, err = io.CopyBuffer(w, src, make([]byte, 1<<20))
	if err == nil && max > 0 && w.n > max {
		err = fmt.Errorf("larger than %d bytes", max)
	}
	if err == nil && want >= 0 && w.n != want {
		err = fmt.Errorf("truncated: %d of %d bytes", w.n, want)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(s.tmp, 0o644)
	}
	if err != nil {
		return 0, "", err
	}
	if progress != nil {
		progress(w.n, want)
	}
	return w.n, hex.EncodeToString(h.Sum(nil)), nil
}

type countingWriter struct {
	w        io.Writer
	n        int64
	timer    *time.Timer
	idle     time.Duration
	progress func(done, total int64)
	total    int64
	lastTold int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.timer.Reset(c.idle)
	if c.progress != nil && c.n-c.lastTold >= 8<<20 {
		c.lastTold = c.n
		c.progress(c.n, c.total)
	}
	return n, err
}

// commit moves the temporary file to blobs/blob, links snapshots/commit/file to it and
// writes refs/refRev when refRev is not "". Every step is a rename, so a concurrent resolver
// storing the same file sees either the old state or the new one.
func (s *store) commit(blob, commit, file, refRev string) (string, error) {
	blobPath := filepath.Join(s.repoDir, "blobs", blob)
	if err := os.Rename(s.tmp, blobPath); err != nil {
		return "", err
	}
	s.tmp = ""
	path := filepath.Join(s.repoDir, "snapshots", commit, filepath.FromSlash(file))
	if err := s.mkdir(filepath.Dir(path)); err != nil {
		return "", err
	}
	target, err := filepath.Rel(filepath.Dir(path), blobPath)
	if err != nil {
		return "", err
	}
	if err := replaceWithSymlink(target, path); err != nil {
		// No symlinks here (Windows without developer mode): the snapshot holds the file
		// itself, as huggingface_hub does in that case.
		if err := os.Rename(blobPath, path); err != nil {
			return "", err
		}
	}
	if refRev != "" {
		ref := filepath.Join(s.repoDir, "refs", filepath.FromSlash(refRev))
		if err := s.mkdir(filepath.Dir(ref)); err != nil {
			return "", err
		}
		if err := writeAtomic(ref, []byte(commit)); err != nil {
			return "", err
		}
	}
	return path, nil
}

// abort removes the temporary file and the folders this store created (when empty: another
// resolver may have filled them meanwhile).
func (s *store) abort() {
	if s.tmp != "" {
		os.Remove(s.tmp)
		s.tmp = ""
	}
	for i := len(s.created) - 1; i >= 0; i-- {
		os.Remove(s.created[i])
	}
	s.created = nil
}

// replaceWithSymlink makes path a symlink to target, replacing what was there atomically.
func replaceWithSymlink(target, path string) error {
	for try := 0; ; try++ {
		tmp := fmt.Sprintf("%s.%d.%d.tmp-link", path, os.Getpid(), time.Now().UnixNano())
		err := os.Symlink(target, tmp)
		if errors.Is(err, os.ErrExist) && try < 3 {
			continue
		}
		if err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			os.Remove(tmp)
			return err
		}
		return nil
	}
}

// writeAtomic writes a temporary file beside path, syncs it and renames it into place.
func writeAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), fmt.Sprintf(".%s.%d.tmp-*", filepath.Base(path), os.Getpid()))
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
