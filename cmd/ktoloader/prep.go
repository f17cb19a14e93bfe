package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/export/report"
	"github.com/ktoloader/ktoloader/internal/outdir"
	"github.com/ktoloader/ktoloader/internal/pipeline"
	"github.com/ktoloader/ktoloader/kto"
	"github.com/ktoloader/ktoloader/loader"
	"github.com/ktoloader/ktoloader/testdata"
	"github.com/ktoloader/ktoloader/tokenize"
)

// tokFlags are the tokenizer flags shared by prep and render.
type tokFlags struct {
	spec    string
	offline bool
}

func (f *tokFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.spec, "tokenizer", "",
		"tokenizer.model, tokenizer.json, a directory holding one, or a Hugging Face repo id; default: $"+
			tokenize.EnvTokenizer+", the HF cache (unsloth/mistral-7b-v0.3), a download, then the embedded demo tokenizer")
	cmd.Flags().BoolVar(&f.offline, "offline", false, "never download a tokenizer (also HF_HUB_OFFLINE=1)")
}

// resolve finds the tokenizer and says loudly on stderr when it is the demo one.
func (f *tokFlags) resolve(stderr io.Writer) (*tokenize.Tokenizer, tokenize.Resolution, error) {
	tok, res, err := tokenize.Resolve(f.spec, tokenize.ResolveOptions{Offline: f.offline})
	if err != nil {
		return nil, res, err
	}
	if res.Demo {
		fmt.Fprintln(stderr, "WARNING: no Mistral tokenizer found (flag, $"+tokenize.EnvTokenizer+", Hugging Face cache, download);")
		fmt.Fprintln(stderr, "WARNING: using the small DEMO tokenizer: these ids are NOT Mistral's. The manifest records tokenizer.demo=true.")
		for _, n := range res.Notes {
			fmt.Fprintln(stderr, "  note:", n)
		}
	}
	return tok, res, nil
}

type prepFlags struct {
	in            inputFlags
	tok           tokFlags
	out           string
	force         bool
	format        string
	shardRows     int64
	shardMB       int64
	workers       int
	seed          int64
	testFrac      float64
	batch         int
	maxLen        int
	truncate      string
	sftLoss       string
	dropLast      bool
	toolsFile     string
	textTools     string
	rejects       string
	asJSON        bool
	maxReject     float64
	noBar         bool
	report        string
	cpuProf       string
	memProf       string
	shard         int
	numShards     int
	memLimit      string
	partitionSize int
	allowDup      bool
}

func newPrepCmd() *cobra.Command {
	var f prepFlags
	cmd := &cobra.Command{
		Use:   "prep [--input FILE…|-] [--tokenizer PATH|REPO] [--out DIR] [flags]",
		Short: "The main job: rows in, KTO/SFT shards (Parquet, Arrow) and a manifest out",
		Long: `prep validates every input row, renders the Mistral v0.3 chat template token-exactly,
splits train/test by prompt group, builds interleaved KTO batches with TRL's KL pairs, packs
them into --max-len rows, and writes:

  OUT/kto/{train,test}-NNNNN-of-NNNNN.parquet         one row per example, TRL's KTO columns
  OUT/kto_packed/{train,test}-….parquet               the batches packed for the GomlX trainer
  OUT/sft/{train,test}-….parquet                      desirable rows, packed, labels -100 off-loss
  OUT/rejects.jsonl                                   every rejected row: file, line, field, reason, raw
  OUT/manifest.json                                   config, sha256s, counts, stats (written last)

With no --input it uses the embedded sample. Same input, flags and seed give byte-identical
files whatever --workers. Exit 0 on success (rejected rows alone are no failure unless
--strict or --max-reject-frac), 1 when the run failed, 2 on a usage error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runPrep(cmd, &f) },
	}
	f.in.register(cmd)
	f.tok.register(cmd)
	fl := cmd.Flags()
	fl.StringVarP(&f.out, "out", "o", "shards", "output directory")
	fl.BoolVar(&f.force, "force", false, "replace a finished run of other inputs or flags in --out (an identical re-run replaces its own without); deletes only what that run's manifest lists")
	fl.BoolVar(&f.allowDup, "allow-duplicate-inputs", false, "accept one file given twice as input (its rows are then written twice)")
	fl.StringVar(&f.format, "format", "parquet", "shard format: parquet, arrow or both")
	fl.Int64Var(&f.shardRows, "shard-rows", 0, "start a new shard after this many rows (0: no limit)")
	fl.Int64Var(&f.shardMB, "shard-bytes", 256<<20, "start a new shard before this many (approximate, uncompressed) bytes (0: no limit)")
	fl.IntVar(&f.workers, "workers", runtime.NumCPU(), "tokenizing goroutines (never changes the output)")
	fl.Int64Var(&f.seed, "seed", kto.DefaultSeed, "seed for the split, the example order and the batch order")
	fl.Float64Var(&f.testFrac, "test-frac", 0, "fraction of each behavior×label stratum held out as test, by whole prompt groups")
	fl.IntVar(&f.batch, "kto-batch-size", kto.DefaultBatchSize, "KTO batch size: TRL's per_device_train_batch_size must equal it")
	fl.IntVar(&f.maxLen, "max-len", kto.DefaultMaxLen, "packed row length and the limit on prompt+completion tokens")
	fl.StringVar(&f.truncate, "truncate", kto.TruncateReject, "rows over --max-len: reject, or keep-end (drop prompt tokens after BOS from the left; never the completion)")
	fl.StringVar(&f.sftLoss, "sft-loss", kto.SFTLossCompletion, "what sft/ labels train on: completion, or all-assistant (earlier assistant turns too)")
	fl.BoolVar(&f.dropLast, "drop-last", false, "drop the examples of the last, partial KTO batch")
	fl.StringVar(&f.toolsFile, "tools", "", "JSON file with a tools list rendered as [AVAILABLE_TOOLS] for rows without their own")
	fl.StringVar(&f.textTools, "assistant-text-with-tools", "keep", "assistant text beside tool calls: keep (render it before [TOOL_CALLS]) or drop (the template exactly)")
	fl.StringVar(&f.rejects, "rejects", "", "rejects file (default OUT/rejects.jsonl)")
	fl.BoolVar(&f.asJSON, "json", false, "print the manifest as the machine-readable summary on stdout")
	fl.Float64Var(&f.maxReject, "max-reject-frac", 0, "fail (exit 1) when more than this fraction of rows is rejected (0: never)")
	fl.BoolVar(&f.noBar, "no-progress", false, "no progress bar even on a terminal")
	fl.StringVar(&f.report, "report", "", "also write the HTML data-quality report to `PATH` (--report alone: OUT/report.html)")
	optionalValue(fl, "report", "-")
	fl.IntVar(&f.shard, "shard-index", 0, "with --num-shards: which shard this run processes, 0 … N-1 (an array job's task index)")
	fl.IntVar(&f.numShards, "num-shards", 1, "process only the rows of one of N shards (by a hash of the row's prompt group), so N runs share the input; combine their outputs with ktoloader merge")
	fl.StringVar(&f.memLimit, "memory-limit", "384MiB", "soft limit for the Go heap (512MiB, 2GiB; off: none; $GOMEMLIMIT wins); raised when the live heap of a large input comes close")
	fl.IntVar(&f.partitionSize, "partition-size", pipeline.DefaultPartitionSize, "examples planned together (split and KTO batches); a larger input keeps its keys on disk and plans partitions of about this size in turn, so memory stays bounded (changes the test split and the batch order, never which rows are written; small partitions make per-stratum test fractions coarse)")
	fl.StringVar(&f.cpuProf, "cpuprofile", "", "write a pprof CPU profile of the run to this file")
	fl.StringVar(&f.memProf, "memprofile", "", "write a pprof heap profile at the end of the run to this file")
	fl.MarkHidden("cpuprofile")
	fl.MarkHidden("memprofile")
	return cmd
}

func runPrep(cmd *cobra.Command, f *prepFlags) error {
	if f.numShards < 1 {
		return usagef("--num-shards must be at least 1")
	}
	if f.partitionSize < 1 {
		return usagef("--partition-size must be at least 1")
	}
	if f.shard < 0 || f.shard >= f.numShards {
		return usagef("--shard-index %d is not in 0 … %d (--num-shards %d)", f.shard, f.numShards-1, f.numShards)
	}
	restore, err := setMemoryLimit(f.memLimit, 1000)
	if err != nil {
		return err
	}
	defer restore()
	lcfg, err := f.in.config()
	if err != nil {
		return err
	}
	format, err := export.ParseFormat(f.format)
	if err != nil {
		return usageError{err}
	}
	echo := export.RunConfig{
		Format: f.format, ShardRows: f.shardRows, ShardBytes: f.shardMB, Seed: f.seed,
		TestFrac: f.testFrac, KTOBatchSize: f.batch, MaxLen: f.maxLen, Truncate: f.truncate,
		SFTLoss: f.sftLoss, DropLast: f.dropLast, Tools: f.toolsFile, AssistantTextWithTools: f.textTools,
		MaxLineBytes: f.in.maxLineBytes, MissingLabel: f.in.missingLabel, Strict: f.in.strict,
		MaxRejectFrac: f.maxReject, PartitionSize: f.partitionSize,
	}
	kc := echo.KTO()
	if err := kc.Validate(); err != nil {
		return usageError{err}
	}
	ropt := tokenize.Options{AssistantTextWithTools: f.textTools}
	if f.toolsFile != "" {
		b, err := os.ReadFile(f.toolsFile)
		if err != nil {
			return usagef("--tools: %v", err)
		}
		ropt.Tools = b
	}
	if err := ropt.Validate(); err != nil {
		return usageError{err}
	}
	// Inputs first, then the output directory (locked, checked, nothing deleted yet), then
	// the tokenizer, which may download: a run that is refused is refused at once.
	names := f.in.names()
	notFile := func(n string) bool { return n == "-" || n == testdata.SampleName }
	if err := outdir.CheckInputs(names, f.allowDup, notFile); err != nil {
		return err
	}
	var paths []string
	var inputs []pipeline.Input
	for _, name := range names {
		name := name
		in := pipeline.Input{Name: name, Open: func(c loader.Config) (*loader.Reader, error) { return openInput(name, c) }}
		if !notFile(name) {
			in.Path = name
			paths = append(paths, name)
		}
		inputs = append(inputs, in)
	}
	if f.toolsFile != "" {
		paths = append(paths, f.toolsFile)
	}
	d, err := outdir.Open(f.out, outdir.Options{Inputs: paths, Force: f.force})
	if err != nil {
		return err
	}
	defer d.Close()
	if f.rejects != "" {
		if err := d.CheckOutput("--rejects", f.rejects, outdir.OutputRejects); err != nil {
			return err
		}
	}
	if f.report != "" && f.report != "-" {
		if err := d.CheckOutput("--report", f.report, outdir.OutputReport); err != nil {
			return err
		}
		if f.rejects != "" && sameOutput(f.rejects, f.report) {
			return usagef("--rejects %s and --report %s are one file", f.rejects, f.report)
		}
	}
	cfg := pipeline.Config{
		Inputs: inputs, Loader: lcfg, Render: ropt, KTO: kc, Out: f.out, Force: f.force, Dir: d,
		Writer:  export.WriterOptions{Format: format, ShardRows: f.shardRows, ShardBytes: f.shardMB},
		Rejects: f.rejects, Workers: f.workers, Strict: f.in.strict, MaxReject: f.maxReject, ConfigEcho: echo,
		NumShards: f.numShards, ShardIndex: f.shard, PartitionSize: f.partitionSize,
	}
	if d.Prev != nil && !f.force && !pipeline.SameRun(d.Prev, cfg) {
		return usageError{fmt.Errorf("%s: %w (it was made from other inputs or flags; an identical re-run replaces it without --force)", f.out, export.ErrOutputExists)}
	}
	stderr := cmd.ErrOrStderr()
	tok, res, err := f.tok.resolve(stderr)
	if err != nil {
		return err
	}
	cfg.Tokenizer, cfg.TokKind, cfg.TokSource, cfg.TokDemo = tok, res.Kind, res.Source, res.Demo
	var bar *progressbar.ProgressBar
	if !f.noBar && term.IsTerminal(int(os.Stderr.Fd())) {
		bar = progressbar.NewOptions64(-1, progressbar.OptionSetWriter(stderr), progressbar.OptionSetDescription("rows"),
			progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("rows"),
			progressbar.OptionThrottle(200_000_000), progressbar.OptionClearOnFinish())
	}
	if bar != nil {
		cfg.Progress = func(n int64) {
			if n%256 == 0 {
				bar.Set64(n)
			}
		}
	}
	var m *export.Manifest
	err = profiled(f.cpuProf, f.memProf, func() (err error) {
		m, err = pipeline.Run(cfg)
		return err
	})
	if bar != nil {
		bar.Finish()
	}
	if err != nil {
		if errors.Is(err, export.ErrOutputExists) {
			return usageError{err}
		}
		return err
	}
	printWarnings(stderr, m.Warnings)
	if f.report != "" {
		path := f.report
		if path == "-" {
			path = ""
		}
		r, err := report.Write(f.out, path, report.Options{})
		if err != nil {
			return fmt.Errorf("report: %w", err)
		}
		if !f.asJSON {
			defer r.WriteSummary(cmd.OutOrStdout())
		}
	}
	if f.asJSON {
		b, err := m.Marshal()
		if err != nil {
			return err
		}
		_, err = cmd.OutOrStdout().Write(b)
		return err
	}
	printManifest(cmd.OutOrStdout(), m, filepath.Clean(f.out))
	return nil
}

// setMemoryLimit sets the Go heap's soft limit, unless $GOMEMLIMIT does. With a limit, and
// unless $GOGC says otherwise, it also sets GOGC to gcPercent (0: unchanged). prep uses 1000:
// its live heap is small (tens
// of MB, plus ~50 bytes per example) while it allocates a lot per row, so the default GOGC
// of 100 collects hundreds of times per 100k rows, and each collection also empties the
// tokenizer's pooled chunk caches. The limit, not GOGC, then bounds the heap, and
// followLiveHeap moves it up when the live heap itself comes close to it. It returns a function that stops
// that and restores the previous settings (tests run prep in-process).
func setMemoryLimit(spec string, gcPercent int) (restore func(), err error) {
	restore = func() {}
	if os.Getenv("GOMEMLIMIT") != "" {
		return restore, nil
	}
	switch strings.ToLower(spec) {
	case "", "0", "off", "none":
		return restore, nil
	}
	n, err := parseBytes(spec)
	if err != nil || n <= 0 {
		return restore, usagef("--memory-limit %q: want a size such as 384MiB or 2GiB", spec)
	}
	oldLimit := debug.SetMemoryLimit(n)
	oldGC := -2
	if os.Getenv("GOGC") == "" && gcPercent > 0 {
		oldGC = debug.SetGCPercent(gcPercent)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		followLiveHeap(n, stop)
	}()
	return func() {
		close(stop)
		<-done
		debug.SetMemoryLimit(oldLimit)
		if oldGC != -2 {
			debug.SetGCPercent(oldGC)
		}
	}, nil
}

// followLiveHeap raises the soft limit when the live heap comes within a tenth of it, to
// one and a half times the live heap plus 64 MiB, until stop closes. The live heap grows
// with the number of examples (~50 bytes each, ~150 at the planning peak: see package
// pipeline); past two or three million rows it would reach a fixed limit, and the collector
// would then run without pause. A run of 1M rows (live heap ~150 MB) stays under the default
// limit. The margins are wide on purpose: the live heap as measured includes what was
// allocated while the collector marked, which grows when collections get rarer, so a
// tighter rule feeds itself.
func followLiveHeap(limit int64, stop <-chan struct{}) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		metrics.Read(sample)
		if sample[0].Value.Kind() != metrics.KindUint64 {
			return
		}
		if live := int64(sample[0].Value.Uint64()); live > limit/10*9 {
			limit = live + live/2 + 64<<20
			debug.SetMemoryLimit(limit)
		}
	}
}

// parseBytes reads a size as GOMEMLIMIT writes it: a number with an optional B, KiB, MiB,
// GiB or TiB suffix.
func parseBytes(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, err
	}
	return n * mult, nil
}

// sameOutput reports whether two output paths name one file (existing or not).
func sameOutput(a, b string) bool {
	if fa, err := os.Stat(a); err == nil {
		if fb, err := os.Stat(b); err == nil {
			return os.SameFile(fa, fb)
		}
	}
	aa, _ := filepath.Abs(a)
	bb, _ := filepath.Abs(b)
	return aa == bb
}

// printManifest is prep's end-of-run summary table.
func printManifest(w io.Writer, m *export.Manifest, out string) {
	c := m.Counts
	fmt.Fprintf(w, "rows read %d, written %d, rejected %d → %s\n", c.Read, c.Written, c.Rejected, out)
	if m.Tokenizer.Demo {
		fmt.Fprintln(w, "tokenizer: DEMO (not Mistral's ids)")
	} else {
		fmt.Fprintf(w, "tokenizer: %s (%s)\n", m.Tokenizer.Name, m.Tokenizer.Kind)
	}
	fmt.Fprintln(w)
	table(w, "reject reason", "rows", c.Reasons)
	splitRows := map[string]int64{}
	for s, sc := range c.Splits {
		splitRows[s+" desirable"] = sc.Desirable
		splitRows[s+" undesirable"] = sc.Undesirable
	}
	table(w, "split", "examples", splitRows)
	if len(c.Notes) > 0 {
		table(w, "note", "count", c.Notes)
	}
	for _, s := range []string{"train", "test"} {
		if p, ok := m.Packing.KTOPacked[s]; ok {
			fmt.Fprintf(w, "kto_packed/%s: %d rows, fill %.1f%%\n", s, p.Rows, 100*p.Fill)
		}
		if p, ok := m.Packing.SFT[s]; ok {
			fmt.Fprintf(w, "sft/%s: %d rows, fill %.1f%%\n", s, p.Rows, 100*p.Fill)
		}
	}
	fmt.Fprintf(w, "tokens per example: p50 %d, p95 %d, max %d\n", m.Tokens.Total.P50, m.Tokens.Total.P95, m.Tokens.Total.Max)
	fmt.Fprintf(w, "suggested KTO weights: desirable %.2f, undesirable %.2f\n", m.KTO.DesirableWeight, m.KTO.UndesirableWeight)
	fmt.Fprintf(w, "%d files, listed with sha256 in %s/manifest.json\n", len(m.Files), out)
}
