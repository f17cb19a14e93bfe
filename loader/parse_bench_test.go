package loader

import (
	"bufio"
	"bytes"
	"os"
	"testing"

	"github.com/ktoloader/ktoloader/internal/shared"
)

// BenchmarkParseRow parses the rows of the real Nexus KTO file: fast is ParseRow (the fast
// path, falling back to parseRow), slow is parseRow (encoding/json) alone. Reports rows/s
// and MB/s of JSON.
func BenchmarkParseRow(b *testing.B) {
	f, err := os.Open(shared.Path(b, "data", "nexus", "behavior_merged_kto_v1.5_balanced.jsonl"))
	if err != nil {
		b.Fatal(err)
	}
	var lines [][]byte
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		if l := bytes.TrimSpace(sc.Bytes()); len(l) > 0 {
			lines = append(lines, append([]byte(nil), l...))
			n += len(l)
		}
	}
	f.Close()
	for _, mode := range []string{"fast", "slow"} {
		b.Run(mode, func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				l := lines[i%len(lines)]
				if mode == "fast" {
					ParseRow(l, "nexus", int64(i), Config{})
				} else {
					parseRow(l, Config{})
				}
			}
			sec := b.Elapsed().Seconds()
			b.ReportMetric(float64(b.N)/sec, "rows/s")
			b.ReportMetric(float64(n)/float64(len(lines))*float64(b.N)/sec/1e6, "MB/s")
		})
	}
}
