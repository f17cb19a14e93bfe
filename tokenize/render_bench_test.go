package tokenize

import (
	"testing"

	"github.com/ktoloader/ktoloader/internal/shared"
	"github.com/ktoloader/ktoloader/loader"
)

// BenchmarkRender renders the Nexus KTO rows with the chat template (ids repaired, arguments
// re-serialized as Python does) without tokenizing: the template's share of BenchmarkExample.
// Reports rows/s and rendered MB/s.
func BenchmarkRender(b *testing.B) {
	r, err := loader.Open(shared.Path(b, "data", "nexus", "behavior_merged_kto_v1.5_balanced.jsonl"), loader.Config{})
	if err != nil {
		b.Fatal(err)
	}
	var rows []loader.Row
	for {
		row, err := r.Read()
		if err != nil {
			if _, bad := err.(*loader.RowError); bad {
				continue
			}
			break
		}
		rows = append(rows, row)
	}
	r.Close()
	rd, err := newRenderer(Options{})
	if err != nil {
		b.Fatal(err)
	}
	bytes := 0
	for i := 0; b.Loop(); i++ {
		out, err := rd.render(&rows[i%len(rows)])
		if err != nil {
			b.Fatal(err)
		}
		for _, s := range out.Prompt {
			bytes += len(s.Text)
		}
		for _, s := range out.Completion {
			bytes += len(s.Text)
		}
	}
	sec := b.Elapsed().Seconds()
	b.ReportMetric(float64(b.N)/sec, "rows/s")
	b.ReportMetric(float64(bytes)/sec/1e6, "MB/s")
}
