package export

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "rejects.jsonl")
	for _, content := range []string{"first\n", "second, longer\n"} {
		if err := WriteFileAtomic(p, []byte(content)); err != nil {
			t.Fatal(err)
		}
		if got := string(readFile(t, p)); got != content {
			t.Errorf("content %q, want %q", got, content)
		}
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}
	if names := listDir(t, dir); !slices.Equal(names, []string{"rejects.jsonl"}) {
		t.Errorf("directory holds %v, want only rejects.jsonl", names)
	}
}

func TestAtomicFileAbort(t *testing.T) {
	dir := t.TempDir()
	a, err := CreateAtomic(filepath.Join(dir, "x"))
	if err != nil {
		t.Fatal(err)
	}
	a.WriteString("partial")
	a.Abort()
	if names := listDir(t, dir); len(names) != 0 {
		t.Errorf("Abort left %v", names)
	}
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if p != dir {
			rel, _ := filepath.Rel(dir, p)
			if d.IsDir() {
				rel += "/"
			}
			names = append(names, filepath.ToSlash(rel))
		}
		return nil
	})
	slices.Sort(names)
	return names
}

func touch(t *testing.T, dir string, names ...string) {
	t.Helper()
	for _, n := range names {
		p := filepath.Join(dir, filepath.FromSlash(n))
		if strings.HasSuffix(n, "/") {
			os.MkdirAll(p, 0o755)
			continue
		}
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPrepareOutDir(t *testing.T) {
	// What a run leaves, and what a user may have put beside it.
	run := []string{"manifest.json", "rejects.jsonl", "report.html", "kto/train-00000-of-00001.parquet",
		"kto/train-00000-of-00001.arrow", "kto_packed/test-00000-of-00002.parquet", "sft/train-00001-of-00002.parquet"}
	crashed := []string{"rejects.jsonl", ".tmp-manifest.json-123", "kto/.tmp-train-00000.parquet",
		"kto/train-00000-of-00001.parquet", "sft/.tmp-test-00003.arrow"}
	user := []string{"notes.txt", "kto/mine.parquet", "ref_logps/train.parquet", "sft/README"}
	afterClean := []string{"kto/", "kto/mine.parquet", "notes.txt", "ref_logps/", "ref_logps/train.parquet", "sft/", "sft/README"}

	cases := []struct {
		name    string
		files   []string
		force   bool
		wantErr error
		want    []string // directory content after
	}{
		{"empty directory", nil, false, nil, nil},
		{"finished run without force", append(run, user...), false, ErrOutputExists, nil},
		{"finished run with force", append(run, user...), true, nil, afterClean},
		{"crashed run", append(crashed, user...), false, nil, afterClean},
		{"crashed run, only ours", crashed, false, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			touch(t, dir, tc.files...)
			before := listDir(t, dir)
			err := PrepareOutDir(dir, tc.force)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			got := listDir(t, dir)
			if tc.wantErr != nil {
				if !strings.Contains(err.Error(), "--force") {
					t.Errorf("error %q does not name --force", err)
				}
				if !slices.Equal(got, before) {
					t.Errorf("refused, yet the directory changed: %v → %v", before, got)
				}
				return
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("after: %v\nwant:  %v", got, tc.want)
			}
		})
	}

	t.Run("missing directory is created", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "a", "b")
		if err := PrepareOutDir(dir, false); err != nil {
			t.Fatal(err)
		}
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			t.Errorf("not created: %v", err)
		}
	})
	t.Run("a file is not a directory", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "f")
		touch(t, filepath.Dir(p), "f")
		if err := PrepareOutDir(p, true); err == nil {
			t.Error("a regular file accepted as output directory")
		}
	})
}

// TestRerunAfterCrash simulates a crash between the shards and the manifest: the directory
// is cleaned without --force, and the rerun verifies.
func TestRerunAfterCrash(t *testing.T) {
	dir := t.TempDir()
	f := newFixture()
	f.write(t, dir)
	os.Remove(filepath.Join(dir, ManifestName))
	touch(t, dir, "kto/.tmp-train-00007.parquet", "kto/train-00000-of-00009.parquet")
	if err := PrepareOutDir(dir, false); err != nil {
		t.Fatal(err)
	}
	if names := listDir(t, dir); len(names) != 0 {
		t.Fatalf("crashed run not cleaned: %v", names)
	}
	f.write(t, dir)
	verifyOK(t, dir)
	if err := PrepareOutDir(dir, false); !errors.Is(err, ErrOutputExists) {
		t.Errorf("finished run: %v, want ErrOutputExists", err)
	}
}
