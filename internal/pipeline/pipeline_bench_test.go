package pipeline

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/ktoloader/ktoloader/internal/shared"
	"github.com/ktoloader/ktoloader/kto"
	"github.com/ktoloader/ktoloader/loader"
	"github.com/ktoloader/ktoloader/tokenize"
)

// BenchmarkPrepNexus runs prep end to end (read, parse, render, tokenize, spill, split, batch,
// pack, write Parquet, manifest) on the real Nexus KTO file with the real Mistral tokenizer,
// with GOMAXPROCS workers, and reports rows/s, tokens/s (prompt + completion tokens written)
// and input MB/s by the wall clock, and per CPU-second (user + system of the process, which
// is fairer on a shared machine). Each iteration starts with a fresh tokenizer, so with cold
// caches, as one prep run does. KTOLOADER_BENCH_INPUT replaces the input file (e.g. a
// `ktoloader gen` file).
func BenchmarkPrepNexus(b *testing.B) {
	data := os.Getenv("KTOLOADER_BENCH_INPUT")
	if data == "" {
		data = shared.Path(b, "data", "nexus", "behavior_merged_kto_v1.5_balanced.jsonl")
	}
	st, err := os.Stat(data)
	if err != nil {
		b.Fatal(err)
	}
	tokDir := shared.Path(b, "tokenizers", "mistral-7b-v0.3")
	dir := b.TempDir()
	var rows, tokens int64
	cpu0 := processCPU()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		tok, err := tokenize.Load(tokDir)
		if err != nil {
			b.Fatal(err)
		}
		out := filepath.Join(dir, fmt.Sprint(i))
		b.StartTimer()
		m, err := Run(Config{
			Inputs:    []Input{{Name: "input.jsonl", Open: func(c loader.Config) (*loader.Reader, error) { return loader.Open(data, c) }}},
			Tokenizer: tok, Out: out, Workers: runtime.GOMAXPROCS(0), KTO: kto.Config{TestFrac: 0.05, Seed: 42},
		})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		rows += m.Counts.Read
		tokens += int64(m.Tokens.Total.Mean*float64(m.Tokens.Total.Count) + 0.5)
		os.RemoveAll(out)
		b.StartTimer()
	}
	sec := b.Elapsed().Seconds()
	cpu := (processCPU() - cpu0).Seconds() // includes the untimed loads: an upper bound
	mb := float64(st.Size()) * float64(b.N) / 1e6
	b.ReportMetric(float64(rows)/sec, "rows/s")
	b.ReportMetric(float64(tokens)/sec, "tokens/s")
	b.ReportMetric(mb/sec, "MB/s")
	if cpu > 0 {
		b.ReportMetric(float64(rows)/cpu, "cpu-rows/s")
		b.ReportMetric(float64(tokens)/cpu, "cpu-tokens/s")
	}
}
