package export

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/ktoloader/ktoloader/kto"
)

// TestLargeTextStatistics: a shard with a text far over MaxTextBytes, written with LargeText,
// reads back (the reader verify uses) and stays about the size of its compressed content.
// Without LargeText parquet-go copies the text into its page header and footer as min and
// max: a 6 MiB prompt made a page header over readers' 4 MiB limit.
func TestLargeTextStatistics(t *testing.T) {
	var b strings.Builder
	for i := 0; b.Len() < 6<<20; i++ {
		b.WriteString("word")
		b.WriteByte(byte('a' + i%26))
		b.WriteByte(' ')
	}
	big := b.String()
	if !IsLargeText(len(big)) || IsLargeText(MaxTextBytes) {
		t.Fatalf("IsLargeText: %d bytes must be large, %d not", len(big), MaxTextBytes)
	}
	rows := []kto.KTORow{
		{PromptIDs: []int32{1, 2}, CompletionIDs: []int32{3}, Label: true, Behavior: "b", Prompt: "small", Completion: "c", Source: "a.jsonl:1"},
		{PromptIDs: []int32{1, 5}, CompletionIDs: []int32{3}, Label: false, Behavior: "b", Prompt: big, Completion: big[:1000], Source: "a.jsonl:2"},
	}
	packed := []kto.PackedRow{{InputIDs: []int32{1, 2, 3}, SegmentIDs: []int32{1, 1, 1}, PositionIDs: []int32{0, 1, 2},
		LossMask: []int32{0, 0, 1}, SegmentLabel: []int32{1}, SegmentKL: []bool{false}, SegmentSource: []string{big}, SegmentExample: []int32{0}}}
	for _, format := range []Format{FormatParquet, FormatBoth} {
		dir := t.TempDir()
		files := writeShards(t, dir, KindKTO, "train", WriterOptions{Format: format, LargeText: true}, rows)
		files = append(files, writeShards(t, dir, KindKTOPacked, "train", WriterOptions{Format: format, LargeText: true}, packed)...)
		for _, fi := range files {
			p := filepath.Join(dir, filepath.FromSlash(fi.Path))
			var n int
			var err error
			if fi.Kind == KindKTO {
				var got []kto.KTORow
				got, err = ReadAll[kto.KTORow](p)
				n = len(got)
				if err == nil && (len(got) != 2 || got[1].Prompt != big || got[1].Completion != big[:1000]) {
					t.Errorf("%s: rows read back differ", fi.Path)
				}
			} else {
				var got []kto.PackedRow
				got, err = ReadAll[kto.PackedRow](p)
				n = len(got)
				if err == nil && (len(got) != 1 || got[0].SegmentSource[0] != big) {
					t.Errorf("%s: rows read back differ", fi.Path)
				}
			}
			if err != nil {
				t.Fatalf("%s: %v", fi.Path, err)
			}
			if int64(n) != fi.Rows {
				t.Errorf("%s: %d rows, FileInfo says %d", fi.Path, n, fi.Rows)
			}
			// The text compresses (it repeats); a copy as min and one as max would double it.
			// (Arrow files are not compressed.)
			if fi.Format == FormatParquet && fi.Bytes > int64(len(big))/4 {
				t.Errorf("%s: %d bytes for a %d-byte text", fi.Path, fi.Bytes, len(big))
			}
			t.Logf("%s: %d bytes", fi.Path, fi.Bytes)
		}
		// The text columns carry no bounds.
		for _, fi := range files {
			if fi.Format != FormatParquet || fi.Kind != KindKTO {
				continue
			}
			pf := openParquetFile(t, filepath.Join(dir, filepath.FromSlash(fi.Path)))
			for _, cc := range pf.Metadata().RowGroups[0].Columns {
				md := cc.MetaData
				if md.Type.String() == "BYTE_ARRAY" && (md.Statistics.MaxValue != nil || md.Statistics.MinValue != nil) {
					t.Errorf("%s: text column %v has min/max statistics", fi.Path, md.PathInSchema)
				}
			}
		}
	}
	// What LargeText avoids (logged, not asserted: it is parquet-go's behaviour, not ours).
	dir := t.TempDir()
	files := writeShards(t, dir, KindKTO, "train", WriterOptions{}, rows)
	_, err := ReadAll[kto.KTORow](filepath.Join(dir, filepath.FromSlash(files[0].Path)))
	t.Logf("without LargeText: %d bytes, read back: %v", files[0].Bytes, err)
}
