package export

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ktoloader/ktoloader/kto"
)

func verifyOK(t *testing.T, dir string) Report {
	t.Helper()
	rep, err := Verify(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		for _, v := range rep.Violations {
			t.Error(v)
		}
		t.Fatalf("Verify found %d violations (+%d omitted) in a valid directory", len(rep.Violations), rep.Omitted)
	}
	return rep
}

func TestVerifyValidFixture(t *testing.T) {
	for _, format := range []Format{FormatParquet, FormatArrow, FormatBoth} {
		t.Run(string(format), func(t *testing.T) {
			f := newFixture()
			f.opt.Format = format
			dir := t.TempDir()
			m := f.write(t, dir)
			rep := verifyOK(t, dir)
			if rep.Files != len(m.Files) {
				t.Errorf("read %d files, manifest lists %d", rep.Files, len(m.Files))
			}
			var rows int64
			for _, fi := range m.Files {
				rows += fi.Rows
			}
			if rep.Rows != rows {
				t.Errorf("read %d rows, manifest lists %d", rep.Rows, rows)
			}
		})
	}
}

// wantCheck asserts that the report names check (and, when file is not empty, that file).
func wantCheck(t *testing.T, rep Report, check, file string) {
	t.Helper()
	for _, v := range rep.Violations {
		if v.Check == check && (file == "" || v.File == file) {
			return
		}
	}
	t.Errorf("no %q violation for %q; got:", check, file)
	for _, v := range rep.Violations {
		t.Log("  ", v)
	}
}

func verifyDir(t *testing.T, dir string) Report {
	t.Helper()
	rep, err := Verify(dir)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() {
		t.Fatal("Verify found nothing wrong")
	}
	return rep
}

// Each case breaks one invariant in the rows; the manifest is recomputed from the broken
// rows, so only the invariant checks can notice.
func TestVerifyRowInvariants(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(f *fixture)
		check  string
	}{
		{"kto row over max_len", func(f *fixture) {
			r := &f.kto["train"][5]
			r.CompletionIDs = append(make([]int32, 14), r.CompletionIDs...)
		}, CheckLength},
		{"kto KL pairing not TRL's", func(f *fixture) {
			f.kto["train"][1].KLCompletionIDs = f.kto["train"][2].CompletionIDs
		}, CheckKL},
		{"kto KL first row does not take the last", func(f *fixture) {
			f.kto["train"][4].KLCompletionIDs = f.kto["train"][5].CompletionIDs
		}, CheckKL},
		{"kto short batch in the middle", func(f *fixture) {
			rows := f.kto["train"]
			f.kto["train"] = append(rows[:3:3], rows[4:]...)
			f.derive()
		}, CheckBatch},
		{"kto batch_index skips", func(f *fixture) {
			for i := range f.kto["train"] {
				f.kto["train"][i].BatchIndex *= 2
			}
			f.derive()
		}, CheckBatch},
		{"packed row shorter than max_len", func(f *fixture) {
			r := &f.packed["train"][0]
			r.InputIDs, r.SegmentIDs, r.PositionIDs, r.LossMask = r.InputIDs[:15], r.SegmentIDs[:15], r.PositionIDs[:15], r.LossMask[:15]
		}, CheckLength},
		{"packed segment resumes after another", func(f *fixture) {
			r := &f.packed["train"][0]
			// segments 1 1 1 2 2 … → make the last token of segment 2 a 1.
			last := 0
			for i, s := range r.SegmentIDs {
				if s == 2 {
					last = i
				}
			}
			r.SegmentIDs[last] = 1
		}, CheckSegments},
		{"packed position does not restart", func(f *fixture) {
			r := &f.packed["train"][0]
			for i, s := range r.SegmentIDs {
				if s == 2 {
					r.PositionIDs[i] += 5
				}
			}
		}, CheckSegments},
		{"packed loss on padding", func(f *fixture) {
			r := &f.packed["train"][0]
			r.LossMask[len(r.LossMask)-1] = 1
		}, CheckLossMask},
		{"packed loss on the prompt", func(f *fixture) {
			f.packed["train"][0].LossMask[0] = 1
		}, CheckPacked},
		{"packed per-segment list too short", func(f *fixture) {
			r := &f.packed["train"][0]
			r.SegmentSource = r.SegmentSource[:len(r.SegmentSource)-1]
		}, CheckSegments},
		{"packed token differs from kto", func(f *fixture) {
			f.packed["test"][0].InputIDs[1]++
		}, CheckPacked},
		{"packed example missing", func(f *fixture) {
			f.packed["train"] = f.packed["train"][1:]
		}, CheckPacked},
		{"packed label differs", func(f *fixture) {
			r := &f.packed["train"][1]
			for s, kl := range r.SegmentKL {
				if !kl {
					r.SegmentLabel[s] = 1 - r.SegmentLabel[s]
					break
				}
			}
		}, CheckPacked},
		{"sft label on the prompt", func(f *fixture) {
			r := &f.sft["train"][0]
			r.Labels[0] = r.InputIDs[0]
		}, CheckSFTMatch},
		{"sft label that is not the input id", func(f *fixture) {
			r := &f.sft["train"][0]
			r.Labels[r.SeqLengths[0]-1]++
		}, CheckSFT},
		{"sft label -100 inside the completion", func(f *fixture) {
			r := &f.sft["train"][0]
			r.Labels[r.SeqLengths[0]-1] = IgnoreIndex // completions here are ≥ 2 tokens
		}, CheckSFT},
		{"sft seq_lengths past the row", func(f *fixture) {
			r := &f.sft["train"][0]
			r.SeqLengths = append(r.SeqLengths, 99)
		}, CheckSFT},
		{"sft label on padding", func(f *fixture) {
			r := &f.sft["test"][0]
			r.Labels[len(r.Labels)-1] = 7
		}, CheckSFT},
		{"sft holds an undesirable example", func(f *fixture) {
			var und kto.KTORow
			for _, r := range f.kto["train"] {
				if !r.Label {
					und = r
					break
				}
			}
			und.Label = true
			f.sft["train"] = append(f.sft["train"], sftGreedy([]kto.KTORow{und}, f.maxLen)...)
		}, CheckSFTMatch},
		{"sft misses a desirable example", func(f *fixture) {
			f.sft["train"] = f.sft["train"][1:]
		}, CheckSFTMatch},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture()
			tc.mutate(f)
			dir := t.TempDir()
			f.write(t, dir)
			wantCheck(t, verifyDir(t, dir), tc.check, "")
		})
	}
}

// TestVerifyFlippedByte flips one byte in each listed file in turn: the sha256 check must
// name that file, whatever else breaks.
func TestVerifyFlippedByte(t *testing.T) {
	f := newFixture()
	f.opt.Format = FormatBoth
	dir := t.TempDir()
	m := f.write(t, dir)
	for _, fi := range m.Files {
		p := filepath.Join(dir, filepath.FromSlash(fi.Path))
		orig := readFile(t, p)
		for _, at := range []int{len(orig) / 2, 4, len(orig) - 10} {
			b := append([]byte{}, orig...)
			b[at] ^= 0x40
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			rep, err := Verify(dir)
			if err != nil {
				t.Fatal(err)
			}
			wantCheck(t, rep, CheckSHA256, fi.Path)
		}
		if err := os.WriteFile(p, orig, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	verifyOK(t, dir)
}

func TestVerifyDirectory(t *testing.T) {
	cases := []struct {
		name   string
		break_ func(t *testing.T, dir string, m *Manifest)
		check  string
		file   string
	}{
		{"unlisted shard", func(t *testing.T, dir string, m *Manifest) {
			os.WriteFile(filepath.Join(dir, "kto", "train-00009-of-00009.parquet"), []byte("x"), 0o644)
		}, CheckUnlisted, "kto/train-00009-of-00009.parquet"},
		{"leftover temporary file", func(t *testing.T, dir string, m *Manifest) {
			os.WriteFile(filepath.Join(dir, "sft", ".tmp-train-00000.parquet"), []byte("x"), 0o644)
		}, CheckUnlisted, "sft/.tmp-train-00000.parquet"},
		{"missing shard", func(t *testing.T, dir string, m *Manifest) {
			os.Remove(filepath.Join(dir, "kto_packed", "test-00001-of-00002.parquet"))
		}, CheckFile, "kto_packed/test-00001-of-00002.parquet"},
		{"truncated shard", func(t *testing.T, dir string, m *Manifest) {
			p := filepath.Join(dir, "kto", "train-00001-of-00004.parquet")
			b := readFile(t, p)
			os.WriteFile(p, b[:len(b)/2], 0o644)
		}, CheckFile, "kto/train-00001-of-00004.parquet"},
		{"rows differ from manifest", func(t *testing.T, dir string, m *Manifest) {
			m.Files[0].Rows++
			WriteManifest(dir, m)
		}, CheckRows, ""},
		{"bytes differ from manifest", func(t *testing.T, dir string, m *Manifest) {
			m.Files[1].Bytes++
			WriteManifest(dir, m)
		}, CheckBytes, ""},
		{"shard missing from the listing", func(t *testing.T, dir string, m *Manifest) {
			for i, fi := range m.Files {
				if fi.Path == "kto/train-00002-of-00004.parquet" {
					m.Files = append(m.Files[:i], m.Files[i+1:]...)
					break
				}
			}
			WriteManifest(dir, m)
		}, CheckName, ""},
		{"read ≠ written + rejected", func(t *testing.T, dir string, m *Manifest) {
			m.Counts.Read++
			WriteManifest(dir, m)
		}, CheckCounts, ""},
		{"split counts differ from kto", func(t *testing.T, dir string, m *Manifest) {
			sc := m.Counts.Splits["train"]
			sc.Desirable--
			sc.Undesirable++
			m.Counts.Splits["train"] = sc
			WriteManifest(dir, m)
		}, CheckCounts, ""},
		{"behavior counts differ from kto", func(t *testing.T, dir string, m *Manifest) {
			sc := m.Counts.Splits["train"]
			sc.Behaviors = map[string]LabelCounts{"call": {sc.Desirable, sc.Undesirable}}
			m.Counts.Splits["train"] = sc
			WriteManifest(dir, m)
		}, CheckCounts, ""},
		{"packing stats differ", func(t *testing.T, dir string, m *Manifest) {
			pi := m.Packing.SFT["train"]
			pi.Tokens++
			m.Packing.SFT["train"] = pi
			WriteManifest(dir, m)
		}, CheckPackInfo, ""},
		{"rejects.jsonl shorter than counted", func(t *testing.T, dir string, m *Manifest) {
			os.WriteFile(filepath.Join(dir, RejectsName), []byte(`{"file":"a","line":1,"field":"","reason":"x","raw":""}`+"\n"), 0o644)
		}, CheckRejects, RejectsName},
		{"schema differs from DESIGN.md", func(t *testing.T, dir string, m *Manifest) {
			type wrongKTO struct { // batch_index as int32
				PromptIDs       []int32 `parquet:"prompt_ids,list"`
				CompletionIDs   []int32 `parquet:"completion_ids,list"`
				KLCompletionIDs []int32 `parquet:"KL_completion_ids,list"`
				Label           bool    `parquet:"label"`
				Behavior        string  `parquet:"behavior"`
				Prompt          string  `parquet:"prompt"`
				Completion      string  `parquet:"completion"`
				Source          string  `parquet:"source"`
				BatchIndex      int32   `parquet:"batch_index"`
			}
			os.Remove(filepath.Join(dir, "kto", "test-00000-of-00001.parquet"))
			files := writeShards(t, dir, KindKTO, "test", WriterOptions{}, []wrongKTO{{Label: true}})
			for i := range m.Files {
				if m.Files[i].Path == files[0].Path {
					m.Files[i] = files[0]
				}
			}
			WriteManifest(dir, m)
		}, CheckSchema, "kto/test-00000-of-00001.parquet"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			m := newFixture().write(t, dir)
			tc.break_(t, dir, m)
			wantCheck(t, verifyDir(t, dir), tc.check, tc.file)
		})
	}
}

func TestVerifyArrowTwinDiffers(t *testing.T) {
	f := newFixture()
	f.opt.Format = FormatBoth
	dir := t.TempDir()
	m := f.write(t, dir)
	// Replace the Arrow twin of a kto shard with other rows, listed with its new digest.
	var files []FileInfo
	func() {
		g := newFixture()
		g.kto["test"][0].Source = "elsewhere:1"
		g.opt.Format = FormatArrow
		files = writeShards(t, dir, KindKTO, "test", g.opt, g.kto["test"])
	}()
	for i := range m.Files {
		for _, fi := range files {
			if m.Files[i].Path == fi.Path {
				m.Files[i] = fi
			}
		}
	}
	if err := WriteManifest(dir, m); err != nil {
		t.Fatal(err)
	}
	wantCheck(t, verifyDir(t, dir), CheckTwin, files[0].Path)
}

func TestVerifyNoManifest(t *testing.T) {
	_, err := Verify(t.TempDir())
	if !errors.Is(err, ErrNoManifest) {
		t.Fatalf("err = %v, want ErrNoManifest", err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, ManifestName), []byte(`{"tool": "other"}`), 0o644)
	if _, err := Verify(dir); !errors.Is(err, ErrBadManifest) {
		t.Fatalf("err = %v, want ErrBadManifest", err)
	}
}

func TestReportJSON(t *testing.T) {
	dir := t.TempDir()
	m := newFixture().write(t, dir)
	m.Counts.Read++
	WriteManifest(dir, m)
	rep := verifyDir(t, dir)
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"check":"counts"`) {
		t.Errorf("report JSON %s does not name the counts check", b)
	}
}
