package export

import (
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/ktoloader/ktoloader/kto"
)

// benchPacked makes n kto_packed rows of 2048 tokens, about 85% filled (the demo's fill) by
// sequences of 200–700 tokens, ids drawn from a 32768 vocabulary: seeded, so every run
// writes the same bytes.
func benchPacked(n int) []kto.PackedRow {
	const maxLen = 2048
	rng := rand.New(rand.NewPCG(3, 4))
	rows := make([]kto.PackedRow, n)
	for i := range rows {
		r := kto.PackedRow{InputIDs: make([]int32, maxLen), SegmentIDs: make([]int32, maxLen),
			PositionIDs: make([]int32, maxLen), LossMask: make([]int32, maxLen), BatchIndex: int64(i / 4)}
		pos := 0
		for seg := int32(1); ; seg++ {
			l := 200 + rng.IntN(500)
			if pos+l > maxLen*85/100 {
				break
			}
			for k := 0; k < l; k++ {
				r.InputIDs[pos], r.SegmentIDs[pos], r.PositionIDs[pos] = int32(rng.IntN(32768)), seg, int32(k)
				if k > l*3/4 {
					r.LossMask[pos] = 1
				}
				pos++
			}
			r.SegmentLabel = append(r.SegmentLabel, seg%2)
			r.SegmentKL = append(r.SegmentKL, seg%2 == 0)
			r.SegmentSource = append(r.SegmentSource, "data/train.jsonl:12345")
			r.SegmentExample = append(r.SegmentExample, seg/2)
		}
		rows[i] = r
	}
	return rows
}

func benchmarkWrite(b *testing.B, format Format) {
	rows := benchPacked(512)
	var bytes int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w, err := NewShardWriter[kto.PackedRow](b.TempDir(), KindKTOPacked, "train", WriterOptions{Format: format})
		if err != nil {
			b.Fatal(err)
		}
		if err := w.Write(rows...); err != nil {
			b.Fatal(err)
		}
		files, err := w.Close()
		if err != nil {
			b.Fatal(err)
		}
		bytes = files[0].Bytes
	}
	b.ReportMetric(float64(len(rows)*b.N)/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric(float64(bytes)/float64(len(rows)), "bytes/row")
}

// BenchmarkWritePacked measures writing 2048-token kto_packed rows (4 × 8 KiB of int32 each).
func BenchmarkWritePackedParquet(b *testing.B) { benchmarkWrite(b, FormatParquet) }
func BenchmarkWritePackedArrow(b *testing.B)   { benchmarkWrite(b, FormatArrow) }

func BenchmarkReadPackedParquet(b *testing.B) {
	rows := benchPacked(512)
	dir := b.TempDir()
	w, _ := NewShardWriter[kto.PackedRow](dir, KindKTOPacked, "train", WriterOptions{})
	w.Write(rows...)
	files, err := w.Close()
	if err != nil {
		b.Fatal(err)
	}
	p := filepath.Join(dir, files[0].Path)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := ReadBatches(p, 64, func([]kto.PackedRow) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(rows)*b.N)/b.Elapsed().Seconds(), "rows/s")
}
