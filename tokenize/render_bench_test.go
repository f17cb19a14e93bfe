package tokenize

import (
	"testing"
)

// BenchmarkRender renders the Nexus KTO rows with the chat template (ids repaired, arguments
// re-serialized as Python does) without tokenizing: the template's share of BenchmarkExample.
// Reports rows/s and rendered MB/s.
func BenchmarkRender(b *testing.B) {
	rows := nexusRows(b)
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
