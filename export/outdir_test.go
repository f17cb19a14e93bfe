package export

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/ktoloader/ktoloader/kto"
)

// writeRun makes dir a finished run through an OutDir, as prep does: the fixture's shards
// journaled, then the manifest, then Finish.
func writeRun(t *testing.T, dir string) {
	t.Helper()
	od, err := OpenOutDir(dir, OutDirOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer od.Close()
	if err := od.Clear(); err != nil {
		t.Fatal(err)
	}
	newFixture().write(t, dir)
	if err := od.Finish(); err != nil {
		t.Fatal(err)
	}
}

func TestOutDir(t *testing.T) {
	ref := t.TempDir()
	writeRun(t, ref)
	runFiles := listDir(t, ref)
	if !slices.Contains(runFiles, LockName) || slices.Contains(runFiles, journalName) {
		t.Fatalf("a finished run holds %v: want the lock file, no journal", runFiles)
	}
	after := []string{LockName, journalName} // what Clear leaves

	cases := []struct {
		name    string
		setup   func(t *testing.T, dir string) OutDirOptions
		wantErr error
		say     string   // in the error
		want    []string // directory content after Clear (nil: after; with wantErr: unchanged)
	}{
		{name: "empty directory", setup: func(*testing.T, string) OutDirOptions { return OutDirOptions{} }, want: after},
		{name: "finished run", setup: func(t *testing.T, dir string) OutDirOptions { writeRun(t, dir); return OutDirOptions{} }, want: after},
		{name: "finished run, a ktoloader report beside it",
			setup: func(t *testing.T, dir string) OutDirOptions {
				writeRun(t, dir)
				os.WriteFile(filepath.Join(dir, ReportName), []byte("<!DOCTYPE html>\n<title>ktoloader data report: x</title>"), 0o644)
				return OutDirOptions{}
			}, want: after},
		{name: "finished run, someone's report.html", wantErr: ErrForeignFiles, say: ReportName,
			setup: func(t *testing.T, dir string) OutDirOptions {
				writeRun(t, dir)
				touch(t, dir, ReportName)
				return OutDirOptions{}
			}},
		{name: "finished run and a user's files", wantErr: ErrForeignFiles, say: "notes.txt, sft/README",
			setup: func(t *testing.T, dir string) OutDirOptions {
				writeRun(t, dir)
				touch(t, dir, "notes.txt", "sft/README")
				return OutDirOptions{}
			}},
		{name: "finished run and an unlisted shard name", wantErr: ErrForeignFiles, say: "kto/train-00007-of-00009.parquet",
			setup: func(t *testing.T, dir string) OutDirOptions {
				writeRun(t, dir)
				touch(t, dir, "kto/train-00007-of-00009.parquet")
				return OutDirOptions{}
			}},
		{name: "train's ref_logps cache stays", want: []string{LockName, journalName, RefLogpsDir + "/", RefLogpsDir + "/train.parquet"},
			setup: func(t *testing.T, dir string) OutDirOptions {
				writeRun(t, dir)
				touch(t, dir, RefLogpsDir+"/train.parquet")
				return OutDirOptions{}
			}},
		{name: "interrupted run: journaled files and temporaries", want: after,
			setup: func(t *testing.T, dir string) OutDirOptions {
				touch(t, dir, "kto/train-00000-of-00002.parquet", "rejects.jsonl", ".tmp-4242-spill-1", "sft/.tmp-4242-train-00001.parquet")
				os.WriteFile(filepath.Join(dir, journalName), []byte("\"kto/train-00000-of-00002.parquet\"\n\"rejects.jsonl\"\n\"kto/tr"), 0o644)
				return OutDirOptions{}
			}},
		{name: "shard-named files with no journal (not provably ours)", wantErr: ErrForeignFiles, say: "kto/train-00000-of-00001.parquet",
			setup: func(t *testing.T, dir string) OutDirOptions {
				touch(t, dir, "kto/train-00000-of-00001.parquet", "rejects.jsonl")
				return OutDirOptions{}
			}},
		{name: "temporaries of another program", wantErr: ErrForeignFiles, say: ".tmp-x",
			setup: func(t *testing.T, dir string) OutDirOptions { touch(t, dir, ".tmp-x"); return OutDirOptions{} }},
		{name: "kto/ a symbolic link", wantErr: ErrUnsafeOutput, say: "symbolic link",
			setup: func(t *testing.T, dir string) OutDirOptions {
				if runtime.GOOS == "windows" {
					t.Skip("symlinks")
				}
				other := t.TempDir()
				os.Symlink(other, filepath.Join(dir, KindKTO))
				return OutDirOptions{}
			}},
		{name: "an input among the listed files", wantErr: ErrUnsafeOutput, say: "input",
			setup: func(t *testing.T, dir string) OutDirOptions {
				writeRun(t, dir)
				m, _ := ReadManifest(dir)
				return OutDirOptions{Inputs: []string{filepath.Join(dir, filepath.FromSlash(m.Files[0].Path))}}
			}},
		{name: "an input hard-linked into the directory", wantErr: ErrUnsafeOutput, say: "data.jsonl",
			setup: func(t *testing.T, dir string) OutDirOptions {
				in := filepath.Join(t.TempDir(), "data.jsonl")
				os.WriteFile(in, []byte("{}\n"), 0o644)
				if err := os.Link(in, filepath.Join(dir, ".tmp-1-x")); err != nil {
					t.Skip(err)
				}
				return OutDirOptions{Inputs: []string{in}}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			opt := tc.setup(t, dir)
			before := listDir(t, dir)
			od, err := OpenOutDir(dir, opt)
			if err == nil {
				err = od.Clear()
				defer od.Close()
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			got := listDir(t, dir)
			if tc.wantErr != nil {
				if !strings.Contains(err.Error(), tc.say) || !strings.Contains(err.Error(), dir) {
					t.Errorf("error %q does not name %q and the directory", err, tc.say)
				}
				if !slices.Equal(got, before) {
					t.Errorf("refused, yet the directory changed: %v → %v", before, got)
				}
				return
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("after Clear: %v\nwant:        %v", got, tc.want)
			}
		})
	}

	t.Run("the root directory is refused without writing", func(t *testing.T) {
		root := string(filepath.Separator)
		if runtime.GOOS == "windows" {
			t.Skip("no single root")
		}
		_, had := os.Lstat(filepath.Join(root, LockName))
		_, err := OpenOutDir(root, OutDirOptions{})
		if !errors.Is(err, ErrForeignFiles) {
			t.Fatalf("OpenOutDir(/) = %v, want ErrForeignFiles", err)
		}
		if _, now := os.Lstat(filepath.Join(root, LockName)); had != nil && now == nil {
			os.Remove(filepath.Join(root, LockName))
			t.Error("OpenOutDir(/) created /.ktoloader.lock before refusing")
		}
	})
	t.Run("a missing directory is created, and removed when nothing was written", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "a", "b")
		od, err := OpenOutDir(dir, OutDirOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := od.Clear(); err != nil {
			t.Fatal(err)
		}
		od.Close()
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("a failed run's fresh directory was left: %v", listDir(t, dir))
		}
	})
	t.Run("a file is not a directory", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "f")
		touch(t, filepath.Dir(p), "f")
		if _, err := OpenOutDir(p, OutDirOptions{}); err == nil {
			t.Error("a regular file accepted as output directory")
		}
	})
	t.Run("an interrupted run is cleaned and the rerun verifies", func(t *testing.T) {
		dir := t.TempDir()
		od, err := OpenOutDir(dir, OutDirOptions{})
		if err != nil {
			t.Fatal(err)
		}
		od.Clear()
		w, err := NewShardWriter[kto.KTORow](dir, KindKTO, "train", WriterOptions{Out: od})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(kto.KTORow{Label: true})
		if _, err := w.Close(); err != nil {
			t.Fatal(err)
		}
		od.Close() // "crash": no manifest, the shard journaled
		writeRun(t, dir)
		verifyOK(t, dir)
		od, err = OpenOutDir(dir, OutDirOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if od.Previous == nil {
			t.Error("a finished run has no Previous")
		}
		od.Close()
	})
}

func TestLockDir(t *testing.T) {
	dir := t.TempDir()
	unlock, err := LockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LockDir(dir); !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), dir) {
		t.Errorf("second LockDir: %v, want ErrLocked naming %s", err, dir)
	}
	if _, err := OpenOutDir(dir, OutDirOptions{}); !errors.Is(err, ErrLocked) {
		t.Errorf("OpenOutDir of a locked directory: %v, want ErrLocked", err)
	}
	unlock()
	unlock() // idempotent
	again, err := LockDir(dir)
	if err != nil {
		t.Fatalf("after unlock: %v", err)
	}
	again()
}

func TestTempNamesCarryThePid(t *testing.T) {
	dir := t.TempDir()
	a, err := CreateAtomic(filepath.Join(dir, "x.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Abort()
	if want := fmt.Sprintf(".tmp-%d-x.json-", os.Getpid()); !strings.HasPrefix(filepath.Base(a.Name()), want) {
		t.Errorf("temporary name %s, want prefix %s", filepath.Base(a.Name()), want)
	}
	if !ourTemp.MatchString(filepath.Base(a.Name())) {
		t.Errorf("%s is not recognised as ours", a.Name())
	}
}
