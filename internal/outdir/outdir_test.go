package outdir

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ktoloader/ktoloader/export"
)

// touch creates each slash path under dir (a trailing / makes a directory).
func touch(t *testing.T, dir string, paths ...string) {
	t.Helper()
	for _, p := range paths {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if strings.HasSuffix(p, "/") {
			os.MkdirAll(full, 0o755)
			continue
		}
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// list is every entry under dir, slash paths, directories with a trailing /.
func list(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			rel += "/"
		}
		out = append(out, rel)
		return nil
	})
	slices.Sort(out)
	return out
}

// writeManifest writes a minimal valid manifest listing files.
func writeManifest(t *testing.T, dir string, files ...string) {
	t.Helper()
	m := export.NewManifest()
	for _, f := range files {
		m.Files = append(m.Files, export.FileInfo{Path: f})
	}
	m.Rejects = &export.RejectsInfo{Path: export.RejectsName}
	if err := export.WriteManifest(dir, m); err != nil {
		t.Fatal(err)
	}
}

func TestOpenReplace(t *testing.T) {
	listed := []string{"kto/train-00000-of-00001.parquet", "sft/train-00000-of-00001.parquet"}
	cases := []struct {
		name     string
		setup    func(t *testing.T, dir string)
		same     bool
		force    bool
		openErr  error
		replErr  error
		wantLeft []string
	}{
		{"empty", func(*testing.T, string) {}, false, false, nil, nil, []string{LockName, JournalName}},
		{"finished run, not the same, no force", func(t *testing.T, dir string) {
			touch(t, dir, append(listed, "rejects.jsonl")...)
			writeManifest(t, dir, listed...)
		}, false, false, nil, export.ErrOutputExists, nil},
		{"finished run, the same run", func(t *testing.T, dir string) {
			touch(t, dir, append(listed, "rejects.jsonl", "ref_logps/train.json", ".tmp-123-spill-9")...)
			writeManifest(t, dir, listed...)
		}, true, false, nil, nil, []string{LockName, JournalName, "ref_logps/", "ref_logps/train.json"}},
		{"finished run, force", func(t *testing.T, dir string) {
			touch(t, dir, append(listed, "rejects.jsonl", "kto/.tmp-55-train-00000.parquet-1")...)
			writeManifest(t, dir, listed...)
		}, false, true, nil, nil, []string{LockName, JournalName}},
		{"a file the manifest does not list, force", func(t *testing.T, dir string) {
			touch(t, dir, append(listed, "kto/train-00001-of-00002.parquet")...)
			writeManifest(t, dir, listed...)
		}, false, true, ErrForeign, nil, nil},
		{"no manifest: shard-named files are foreign", func(t *testing.T, dir string) {
			touch(t, dir, listed...)
		}, false, true, ErrForeign, nil, nil},
		{"a crashed run: the journal lists its files", func(t *testing.T, dir string) {
			touch(t, dir, append(listed, "rejects.jsonl", ".tmp-77-manifest.json-3")...)
			os.WriteFile(filepath.Join(dir, JournalName), []byte(`"kto/train-00000-of-00001.parquet"
"sft/train-00000-of-00001.parquet"
"rejects.jsonl"
"sft/torn`), 0o644)
		}, false, false, nil, nil, []string{LockName, JournalName}},
		{"a manifest that is not ours", func(t *testing.T, dir string) {
			touch(t, dir, "manifest.json")
		}, false, true, ErrForeign, nil, nil},
		{"a report that is ours", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "report.html"), []byte("<!doctype html><html><head><title>ktoloader data report: x</title>"), 0o644)
		}, false, false, nil, nil, []string{LockName, JournalName}},
		{"a report.html that is not", func(t *testing.T, dir string) {
			touch(t, dir, "report.html")
		}, false, true, ErrForeign, nil, nil},
		{"kto a symlink", func(t *testing.T, dir string) {
			other := t.TempDir()
			if err := os.Symlink(other, filepath.Join(dir, "kto")); err != nil {
				t.Skip(err)
			}
		}, false, true, ErrUnsafe, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.setup(t, dir)
			before := list(t, dir)
			d, err := Open(dir, Options{Force: tc.force})
			if !errors.Is(err, tc.openErr) {
				t.Fatalf("Open: %v, want %v", err, tc.openErr)
			}
			if err != nil {
				if got := list(t, dir); !slices.Equal(got, before) {
					t.Errorf("a refused Open changed the directory: %v → %v", before, got)
				}
				return
			}
			defer d.Close()
			err = d.Replace(tc.same)
			if !errors.Is(err, tc.replErr) {
				t.Fatalf("Replace: %v, want %v", err, tc.replErr)
			}
			if err != nil {
				withLock := append(slices.Clone(before), LockName)
				slices.Sort(withLock)
				if got := list(t, dir); !slices.Equal(got, withLock) {
					t.Errorf("a refused Replace changed the directory: %v → %v", before, got)
				}
				return
			}
			slices.Sort(tc.wantLeft)
			if got := list(t, dir); !slices.Equal(got, tc.wantLeft) {
				t.Errorf("after Replace: %v\nwant %v", got, tc.wantLeft)
			}
		})
	}
}

// TestFailedRunLeavesNothing: a run that renamed files into place and then failed (no
// Finish) removes them and its journal; a finished one keeps them and drops the journal.
func TestFailedRunLeavesNothing(t *testing.T) {
	for _, finish := range []bool{false, true} {
		dir := filepath.Join(t.TempDir(), "out")
		d, err := Open(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Replace(false); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "kto", "train-00000-of-00001.parquet")
		if err := d.Record(p); err != nil {
			t.Fatal(err)
		}
		touch(t, dir, "kto/train-00000-of-00001.parquet")
		if finish {
			writeManifest(t, dir, "kto/train-00000-of-00001.parquet")
			if err := d.Finish(); err != nil {
				t.Fatal(err)
			}
		}
		d.Close()
		got := list(t, dir)
		want := []string(nil) // created by the run and left empty: removed
		if finish {
			want = []string{LockName, "kto/", "kto/train-00000-of-00001.parquet", "manifest.json"}
		}
		if !slices.Equal(got, want) {
			t.Errorf("finish=%v: left %v, want %v", finish, got, want)
		}
	}
}

// TestLocks: one exclusive holder; shared holders together; no exclusive beside a shared.
func TestLocks(t *testing.T) {
	dir := t.TempDir()
	a, err := LockExclusive(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LockExclusive(dir); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "(pid ") {
		t.Errorf("second exclusive: %v", err)
	}
	if _, err := LockShared(dir); !errors.Is(err, ErrInUse) {
		t.Errorf("shared beside exclusive: %v", err)
	}
	a.Release()
	a.Release()
	s1, err := LockShared(dir)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := LockShared(dir)
	if err != nil {
		t.Fatalf("two shared: %v", err)
	}
	if _, err := LockExclusive(dir); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "train is reading") {
		t.Errorf("exclusive beside shared: %v", err)
	}
	s1.Release()
	s2.Release()
	b, err := LockExclusive(dir)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	b.Release()
}

func TestTempNames(t *testing.T) {
	dir := t.TempDir()
	a, _ := os.CreateTemp(dir, export.TempPattern("spill"))
	b, _ := os.CreateTemp(dir, export.TempPattern("spill"))
	a.Close()
	b.Close()
	if a.Name() == b.Name() || !IsTemp(filepath.Base(a.Name())) {
		t.Errorf("temporary names %s, %s", a.Name(), b.Name())
	}
	for _, n := range []string{".tmp-spill-1", "tmp-12-x", ".tmp-x-12-"} {
		if IsTemp(n) {
			t.Errorf("%s taken for one of ours", n)
		}
	}
}

// TestRemoveRun: a finished run taken back (merge's verification failed) leaves a directory
// the next run accepts without --force.
func TestRemoveRun(t *testing.T) {
	dir := t.TempDir()
	d, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Replace(false); err != nil {
		t.Fatal(err)
	}
	touch(t, dir, "kto/train-00000-of-00001.parquet", "rejects.jsonl")
	writeManifest(t, dir, "kto/train-00000-of-00001.parquet")
	if err := d.Finish(); err != nil {
		t.Fatal(err)
	}
	m, err := export.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.RemoveRun(m); err != nil {
		t.Fatal(err)
	}
	d.Close()
	if got := list(t, dir); !slices.Equal(got, []string{LockName}) {
		t.Errorf("left %v", got)
	}
	d, err = Open(dir, Options{})
	if err != nil {
		t.Fatalf("the next run: %v", err)
	}
	d.Close()
}
