package export

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// topLevelKeys returns an object's keys in file order.
func topLevelKeys(t *testing.T, data []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not an object: %v %v", tok, err)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

func TestManifestLayout(t *testing.T) {
	m := NewManifest()
	m.Config = RunConfig{Seed: 42, MaxLen: 2048, TestFrac: 0.1, AssistantTextWithTools: "keep"}
	m.Counts.Reasons = map[string]int64{"too_long": 2, "invalid_json": 1}
	m.Files = []FileInfo{{Path: "sft/train-00000-of-00001.parquet"}, {Path: "kto/train-00000-of-00001.parquet"}}
	data, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"format_version", "tool", "config", "inputs", "tokenizer", "counts", "tokens", "packing", "kto", "files"}
	if got := topLevelKeys(t, data); !slices.Equal(got, want) {
		t.Errorf("keys %v, want %v", got, want)
	}
	s := string(data)
	if !strings.HasSuffix(s, "}\n") || strings.HasSuffix(s, "\n\n") {
		t.Error("manifest does not end with exactly one newline")
	}
	if !strings.Contains(s, "\n  \"tool\": \"ktoloader\",\n") {
		t.Error("not indented by two spaces")
	}
	for _, ordered := range [][]string{
		{`"assistant_text_with_tools"`, `"max_len"`, `"seed"`, `"test_frac"`}, // config keys sorted
		{`"invalid_json"`, `"too_long"`},
		{`"kto/train-00000-of-00001.parquet"`, `"sft/train-00000-of-00001.parquet"`}, // files by path
	} {
		last := -1
		for _, k := range ordered {
			i := strings.Index(s, k)
			if i < last {
				t.Errorf("%s out of order in\n%s", k, s)
			}
			last = i
		}
	}
	// Marshal does not reorder the caller's slice.
	if m.Files[0].Path != "sft/train-00000-of-00001.parquet" {
		t.Error("Marshal sorted the caller's Files")
	}
	again, _ := m.Marshal()
	if !bytes.Equal(data, again) {
		t.Error("two marshals differ")
	}
}

func TestManifestRejectsHostPaths(t *testing.T) {
	for _, p := range []string{"/abs/kto/x.parquet", `kto\x.parquet`, "../x.parquet", ""} {
		m := NewManifest()
		m.Files = []FileInfo{{Path: p}}
		if _, err := m.Marshal(); !errors.Is(err, ErrBadManifest) {
			t.Errorf("path %q: %v, want ErrBadManifest", p, err)
		}
	}
}

func TestManifestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	m := NewManifest()
	m.Config = RunConfig{MaxLen: 2048, SFTLoss: "completion", Seed: 1<<53 + 1}
	m.Counts = Counts{Read: 5, Written: 4, Rejected: 1, Reasons: map[string]int64{"x": 1},
		Splits: map[string]SplitCounts{"train": {Examples: 4, Desirable: 3, Undesirable: 1, Behaviors: map[string]LabelCounts{"b": {3, 1}}}}}
	m.Tokens.Total = Summarize([]int{5, 1, 3})
	m.Files = []FileInfo{{Path: "kto/train-00000-of-00001.parquet", Format: FormatParquet, Kind: KindKTO, Split: "train", Rows: 4, Bytes: 10, SHA256: "ab"}}
	if err := WriteManifest(dir, m); err != nil {
		t.Fatal(err)
	}
	got, err := ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Config != m.Config {
		t.Errorf("config %+v, want %+v (integers must keep their digits: 2^53+1 is no float64)", got.Config, m.Config)
	}
	if !reflect.DeepEqual(got.Counts, m.Counts) || !reflect.DeepEqual(got.Files, m.Files) || got.Tokens != m.Tokens {
		t.Errorf("round trip differs:\n%+v\n%+v", got, m)
	}
	if names := listDir(t, dir); !slices.Equal(names, []string{ManifestName}) {
		t.Errorf("directory holds %v", names)
	}
}

func TestReadManifestErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadManifest(dir); !errors.Is(err, ErrNoManifest) {
		t.Errorf("missing: %v", err)
	}
	for _, content := range []string{"{", `{"tool": "ktoloader", "format_version": 0}`, `{"tool": "ktoloader", "format_version": 99}`, `[]`} {
		os.WriteFile(filepath.Join(dir, ManifestName), []byte(content), 0o644)
		if _, err := ReadManifest(dir); !errors.Is(err, ErrBadManifest) {
			t.Errorf("%s: %v, want ErrBadManifest", content, err)
		}
	}
}

func TestSummarize(t *testing.T) {
	// Nearest rank over 1..20: p50 is the 10th value, p95 the 19th.
	xs := make([]int, 20)
	for i := range xs {
		xs[i] = 20 - i
	}
	want := Dist{Count: 20, Min: 1, Mean: 10.5, P50: 10, P95: 19, Max: 20}
	if got := Summarize(xs); got != want {
		t.Errorf("Summarize(1..20) = %+v, want %+v", got, want)
	}
	if got := Summarize([]int{7}); got != (Dist{Count: 1, Min: 7, Mean: 7, P50: 7, P95: 7, Max: 7}) {
		t.Errorf("one value: %+v", got)
	}
	if got := Summarize([]int{1, 2}); got.Mean != 1.5 || got.P50 != 1 || got.P95 != 2 {
		t.Errorf("two values: %+v", got)
	}
	if got := Summarize(nil); got != (Dist{}) {
		t.Errorf("none: %+v", got)
	}
	if got := Summarize([]int{1, 1, 2}); got.Mean != 1.333 {
		t.Errorf("mean %v, want 1.333 (rounded to 1/1000)", got.Mean)
	}
}
