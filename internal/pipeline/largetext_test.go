package pipeline

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/kto"
	"github.com/ktoloader/ktoloader/loader"
	"github.com/ktoloader/ktoloader/testdata"
)

// largeTextInputs is the sample data plus one row whose tool message is n bytes of words.
func largeTextInputs(n int) []Input {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "w%d ", i%977)
	}
	content, _ := json.Marshal(b.String())
	row := `{"conversations":[{"role":"user","content":"look it up"},` +
		`{"role":"assistant","content":null,"tool_calls":[{"id":"abcDEF123","type":"function","function":{"name":"lookup","arguments":"{}"}}]},` +
		`{"role":"tool","tool_call_id":"abcDEF123","content":` + string(content) + `},` +
		`{"role":"assistant","content":"done"}],"label":true,"behavior":"b"}` + "\n"
	data := append(append([]byte(nil), testdata.SampleJSONL...), row...)
	return []Input{{Name: "large.jsonl", Open: func(c loader.Config) (*loader.Reader, error) {
		return loader.NewReader(bytes.NewReader(data), "large.jsonl", c)
	}}}
}

// textStats reports, over a run's kto/ and kto_packed/ Parquet files, whether any text
// column has min/max statistics and whether any lacks them.
func textStats(t *testing.T, out string, m *export.Manifest) (some, missing bool) {
	t.Helper()
	for _, f := range m.Files {
		if f.Format != export.FormatParquet || f.Kind == export.KindSFT {
			continue
		}
		b, err := os.ReadFile(filepath.Join(out, f.Path))
		if err != nil {
			t.Fatal(err)
		}
		pf, err := parquet.OpenFile(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatalf("%s: %v", f.Path, err)
		}
		for _, rg := range pf.Metadata().RowGroups {
			for _, cc := range rg.Columns {
				if cc.MetaData.Type.String() != "BYTE_ARRAY" {
					continue
				}
				if cc.MetaData.Statistics.MaxValue != nil {
					some = true
				} else {
					missing = true
				}
			}
		}
	}
	return some, missing
}

// TestMergeLargeText: a run with a text over export.MaxTextBytes notes it and writes its
// text columns without statistics (so the shard stays readable, see
// export.TestLargeTextStatistics); its shard runs and their merge follow the same rule: the
// merge has no text statistics because one of its inputs had a large text, and verifies.
func TestMergeLargeText(t *testing.T) {
	tok := demoTok(t)
	kc := kto.Config{TestFrac: 0.2, Seed: 9, MaxLen: 1024, BatchSize: 5, Truncate: kto.TruncateKeepEnd}
	in := largeTextInputs(export.MaxTextBytes + 64<<10)
	dir := t.TempDir()
	whole := run(t, Config{Inputs: in, Tokenizer: tok, Out: filepath.Join(dir, "all"), KTO: kc})
	if n := whole.Counts.Notes[NoteLargeText]; n != 1 || !HasLargeText(whole) {
		t.Fatalf("notes %v: want %s 1", whole.Counts.Notes, NoteLargeText)
	}
	if some, _ := textStats(t, filepath.Join(dir, "all"), whole); some {
		t.Errorf("the whole run wrote text statistics beside a large text")
	}
	if rep, err := export.Verify(filepath.Join(dir, "all")); err != nil || !rep.OK() {
		t.Fatalf("verify: %v %+v", err, rep)
	}
	const N = 2
	var outs []string
	large := 0
	for i := 0; i < N; i++ {
		out := filepath.Join(dir, fmt.Sprint("shard", i))
		sm := run(t, Config{Inputs: in, Tokenizer: tok, Out: out, KTO: kc, NumShards: N, ShardIndex: i})
		outs = append(outs, out)
		some, missing := textStats(t, out, sm)
		if HasLargeText(sm) {
			large++
			if some {
				t.Errorf("shard %d: text statistics beside a large text", i)
			}
		} else if missing {
			t.Errorf("shard %d: no large text, yet text statistics are missing", i)
		}
	}
	if large != 1 {
		t.Fatalf("%d shards hold the large row, want 1", large)
	}
	merged := filepath.Join(dir, "merged")
	m, err := Merge(MergeConfig{Inputs: outs, Out: merged})
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := export.Verify(merged); err != nil || !rep.OK() {
		t.Fatalf("verify: %v %+v", err, rep)
	}
	if !HasLargeText(m) {
		t.Errorf("merged notes %v lack %s", m.Counts.Notes, NoteLargeText)
	}
	if some, missing := textStats(t, merged, m); some || !missing {
		t.Errorf("merged: text statistics present %v, missing %v; want none present", some, missing)
	}
}
