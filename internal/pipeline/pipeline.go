// Package pipeline is `ktoloader prep` as a library: it streams rows through validation,
// the Mistral template and the tokenizer (in parallel, output in input order), keeps the
// tokenized examples in a spill file, plans the split and the KTO batches on compact keys,
// and writes kto/, kto_packed/ and sft/ shards, rejects.jsonl and the manifest (last).
//
// Memory: rows in flight are bounded by a window (Workers × 64); the spill file holds the
// examples on disk; RAM holds only a ~56-byte key and three lengths per example (for the
// split, the batch plan and the length statistics), and one batch or one SFT window of ids.
package pipeline

import (
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/kto"
	"github.com/ktoloader/ktoloader/loader"
	"github.com/ktoloader/ktoloader/tokenize"
)

// Config is one prep run. Zero fields take defaults where one exists.
type Config struct {
	Inputs []Input // in order; each names how it is opened and recorded
	Loader loader.Config

	Tokenizer  *tokenize.Tokenizer
	TokKind    string // how it was found (path, env, hf-cache, download, demo)
	TokSource  string // as given or found, never an absolute path the user did not type
	TokDemo    bool
	Render     tokenize.Options
	KTO        kto.Config
	Out        string
	Force      bool
	Writer     export.WriterOptions
	Rejects    string // path of the rejects file; "" means OUT/rejects.jsonl
	Workers    int    // default: all cores; never changes the output
	Strict     bool   // stop at the first rejected row
	MaxReject  float64
	ConfigEcho map[string]any // the flags to record in the manifest (all but workers)

	// Progress, when set, is called after each input row with the rows read so far.
	Progress func(read int64)
}

// Input is one input: its recorded name (as given on the command line) and how to open it.
type Input struct {
	Name string
	Open func(loader.Config) (*loader.Reader, error)
}

// Sentinel errors of a run.
var (
	// ErrStrict: --strict and a row was rejected.
	ErrStrict = errors.New("stopped at the first rejected row (--strict)")
	// ErrTooManyRejects: more than --max-reject-frac of the rows were rejected.
	ErrTooManyRejects = errors.New("too many rejected rows (--max-reject-frac)")
)

// Splits in output order.
var splits = []string{"train", "test"}

// Run executes a prep run and returns its manifest (also written to OUT/manifest.json).
func Run(cfg Config) (*export.Manifest, error) {
	if cfg.Tokenizer == nil {
		return nil, errors.New("pipeline: no tokenizer")
	}
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.NumCPU()
	}
	if err := cfg.KTO.Validate(); err != nil {
		return nil, err
	}
	mistral, err := tokenize.NewMistral(cfg.Tokenizer, cfg.Render)
	if err != nil {
		return nil, err
	}
	if err := export.PrepareOutDir(cfg.Out, cfg.Force); err != nil {
		return nil, err
	}
	rejPath := cfg.Rejects
	if rejPath == "" {
		rejPath = cfg.Out + "/rejects.jsonl"
	}
	rej, err := NewRejects(rejPath)
	if err != nil {
		return nil, err
	}
	defer rej.Abort()
	sp, err := newSpill(cfg.Out)
	if err != nil {
		return nil, err
	}
	defer sp.Close()

	m := export.NewManifest()
	for k, v := range cfg.ConfigEcho {
		m.Config[k] = v
	}
	m.Tokenizer = export.TokenizerInfo{Name: cfg.TokSource, Kind: cfg.TokKind, SHA256: cfg.Tokenizer.SHA256(),
		Demo: cfg.TokDemo, VocabSize: cfg.Tokenizer.VocabSize()}

	// Pass one: read, validate, render, tokenize, truncate; spill what passes.
	var keys []kto.Key
	var lens [][2]int32
	notes := map[string]int64{}
	var read int64
	for _, in := range cfg.Inputs {
		r, err := in.Open(cfg.Loader)
		if err != nil {
			return nil, err
		}
		type result struct {
			ex      tokenize.Example
			trimmed int
		}
		err = ordered(cfg.Workers, cfg.Workers*64, r.Read,
			func(row *loader.Row) (result, error) {
				ex, err := mistral.Example(row)
				if err != nil {
					return result{}, err
				}
				n, err := kto.Truncate(&ex, cfg.KTO)
				return result{ex, n}, err
			},
			func(it *item[result]) error {
				read++
				if cfg.Progress != nil {
					cfg.Progress(read)
				}
				re := it.bad
				if re == nil && it.err != nil {
					re = &loader.RowError{File: it.row.File, Line: it.row.Line, Err: it.err, Raw: it.row.Raw}
					var le *kto.LengthError
					if errors.As(it.err, &le) {
						re.Detail = le.Error() // carries the length, for people and the report
					}
					var te *tokenize.TemplateError
					if errors.As(it.err, &te) {
						re.Field = te.Field
					}
				}
				if re != nil {
					m.Counts.Read++
					m.Counts.Rejected++
					m.Counts.Reasons[loader.Reason(re)]++
					if err := rej.Write(re); err != nil {
						return err
					}
					if cfg.Strict {
						return fmt.Errorf("%w: %v", ErrStrict, re)
					}
					return nil
				}
				ex := &it.out.ex
				if _, err := sp.Append(ex); err != nil {
					return err
				}
				m.Counts.Read++
				m.Counts.Written++
				keys = append(keys, kto.KeyOf(ex))
				lens = append(lens, [2]int32{int32(len(ex.PromptIDs)), int32(len(ex.CompletionIDs))})
				if ex.RepairedIDs > 0 {
					notes["repaired_tool_call_ids"] += int64(ex.RepairedIDs)
					notes["rows_with_repaired_ids"]++
				}
				if ex.TextWithTools {
					notes["assistant_text_with_tools"]++
				}
				if it.out.trimmed > 0 {
					notes["truncated"]++
				}
				return nil
			})
		sum, size := r.Digest()
		m.Inputs = append(m.Inputs, export.Input{Name: in.Name, SHA256: sum, Bytes: size})
		if cerr := r.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("%s: %w", in.Name, cerr)
		}
		if err != nil {
			return nil, err
		}
	}
	if err := sp.Finish(); err != nil {
		return nil, err
	}
	if len(notes) > 0 {
		m.Counts.Notes = notes
	}
	if cfg.MaxReject > 0 && m.Counts.Read > 0 && float64(m.Counts.Rejected) > cfg.MaxReject*float64(m.Counts.Read) {
		return nil, fmt.Errorf("%w: %d of %d rows (limit %.3g)", ErrTooManyRejects, m.Counts.Rejected, m.Counts.Read, cfg.MaxReject)
	}
	m.Tokens = tokenStats(lens)

	// Plan the split on the keys, then each split's batches.
	isTest, splitStats, err := kto.PlanSplit(keys, cfg.KTO)
	if err != nil {
		return nil, err
	}
	m.Split = splitStats
	kc := cfg.KTO
	ktoCfg, _ := kc.WithDefaults()
	m.KTO.BatchSize = ktoCfg.BatchSize
	m.Packing.MaxLen = ktoCfg.MaxLen
	for _, split := range splits {
		idx := make([]int, 0, len(keys))
		for i := range keys {
			if isTest[i] == (split == "test") {
				idx = append(idx, i)
			}
		}
		if len(idx) == 0 {
			continue
		}
		files, err := writeSplit(cfg, ktoCfg, sp, rej, keys, idx, split, m)
		m.Files = append(m.Files, files...)
		if err != nil {
			return nil, err
		}
	}
	if tr, ok := m.KTO.Splits["train"]; ok {
		m.KTO.DesirableWeight, m.KTO.UndesirableWeight = kto.SuggestWeights(int(tr.Desirable), int(tr.Undesirable))
	}

	if err := rej.Commit(); err != nil {
		return nil, err
	}
	if err := export.WriteManifest(cfg.Out, m); err != nil {
		return nil, err
	}
	return m, nil
}

// writeSplit writes one split's kto/, kto_packed/ and sft/ shards.
func writeSplit(cfg Config, kc kto.Config, sp *spill, rej *Rejects, keys []kto.Key, idx []int, split string, m *export.Manifest) (files []export.FileInfo, err error) {
	sub := make([]kto.Key, len(idx))
	for j, i := range idx {
		sub[j] = keys[i]
	}
	plan, bstats, err := kto.PlanBatches(sub, kc)
	if err != nil {
		return nil, err
	}
	if bstats.Dropped > 0 {
		if err := rejectDropped(sp, rej, idx, plan, m); err != nil {
			return nil, err
		}
	}
	kw, err := export.NewShardWriter[kto.KTORow](cfg.Out, "kto", split, cfg.Writer)
	if err != nil {
		return nil, err
	}
	pw, err := export.NewShardWriter[kto.PackedRow](cfg.Out, "kto_packed", split, cfg.Writer)
	if err != nil {
		kw.Abort()
		return nil, err
	}
	sw, err := export.NewShardWriter[kto.SFTRow](cfg.Out, "sft", split, cfg.Writer)
	if err != nil {
		kw.Abort()
		pw.Abort()
		return nil, err
	}
	defer func() {
		if err != nil {
			kw.Abort()
			pw.Abort()
			sw.Abort()
		}
	}()
	sft, err := kto.NewSFTPacker(kc)
	if err != nil {
		return nil, err
	}
	sc := export.SplitCounts{Behaviors: map[string]export.LabelCounts{}}
	var packStats kto.PackStats
	batch := make([]tokenize.Example, 0, kc.BatchSize)
	for b, members := range plan {
		batch = batch[:0]
		for _, j := range members {
			ex, err := sp.Get(idx[j])
			if err != nil {
				return nil, err
			}
			batch = append(batch, ex)
		}
		rows, klCut := kto.BatchRows(batch, int64(b), kc)
		bstats.KLTruncated += klCut
		if err := kw.Write(rows...); err != nil {
			return nil, err
		}
		packed, ps, err := kto.PackBatch(rows, kc)
		if err != nil {
			return nil, err
		}
		packStats.Add(ps)
		if err := pw.Write(packed...); err != nil {
			return nil, err
		}
		for k := range batch {
			ex := &batch[k]
			sc.Examples++
			lc := sc.Behaviors[ex.Behavior]
			if ex.Label {
				sc.Desirable++
				lc.Desirable++
				srows, err := sft.Add(ex)
				if err != nil {
					return nil, err
				}
				if err := sw.Write(srows...); err != nil {
					return nil, err
				}
			} else {
				sc.Undesirable++
				lc.Undesirable++
			}
			sc.Behaviors[ex.Behavior] = lc
		}
	}
	if err := sw.Write(sft.Flush()...); err != nil {
		return nil, err
	}
	m.Counts.Splits[split] = sc
	m.KTO.Splits[split] = export.BatchInfo{Examples: int64(bstats.Examples), Desirable: int64(bstats.Desirable),
		Undesirable: int64(bstats.Undesirable), Batches: int64(bstats.Batches), LastBatch: int64(bstats.LastBatch),
		Dropped: int64(bstats.Dropped), NoDesirable: int64(bstats.NoDesirable), NoUndesirable: int64(bstats.NoUndesirable),
		KLTruncated: int64(bstats.KLTruncated)}
	ss := sft.Stats()
	m.Packing.KTOPacked[split] = export.PackInfo{Rows: int64(packStats.Rows), Sequences: int64(packStats.Sequences), Tokens: packStats.Tokens, Fill: packStats.Fill}
	m.Packing.SFT[split] = export.PackInfo{Rows: int64(ss.Rows), Sequences: int64(ss.Sequences), Tokens: ss.Tokens, Fill: ss.Fill}
	for _, w := range []interface {
		Close() ([]export.FileInfo, error)
	}{kw, pw, sw} {
		fi, err := w.Close()
		files = append(files, fi...)
		if err != nil {
			return files, err
		}
	}
	return files, nil
}

// rejectDropped accounts for the examples that --drop-last left out of the last, partial KTO
// batch: they are rejected (reason drop_last, in rejects.jsonl with their source), so that
// read = written + rejected still holds and nothing vanishes.
func rejectDropped(sp *spill, rej *Rejects, idx []int, plan [][]int, m *export.Manifest) error {
	in := make([]bool, len(idx))
	for _, b := range plan {
		for _, j := range b {
			in[j] = true
		}
	}
	for j, ok := range in {
		if ok {
			continue
		}
		ex, err := sp.Get(idx[j])
		if err != nil {
			return err
		}
		file, line := splitSource(ex.Source)
		re := &loader.RowError{File: file, Line: line, Err: errDropLast,
			Detail: "left out of the last, partial KTO batch by --drop-last"}
		m.Counts.Written--
		m.Counts.Rejected++
		m.Counts.Reasons[reasonDropLast]++
		if err := rej.Write(re); err != nil {
			return err
		}
	}
	return nil
}

const reasonDropLast = "drop_last"

type dropLastErr struct{}

func (dropLastErr) Error() string  { return "dropped by --drop-last" }
func (dropLastErr) Reason() string { return reasonDropLast }

var errDropLast error = dropLastErr{}

// splitSource splits "file:line" at the last colon.
func splitSource(src string) (string, int64) {
	i := strings.LastIndexByte(src, ':')
	if i < 0 {
		return src, 0
	}
	n, _ := strconv.ParseInt(src[i+1:], 10, 64)
	return src[:i], n
}

func tokenStats(lens [][2]int32) export.TokenStats {
	p := make([]int, len(lens))
	c := make([]int, len(lens))
	t := make([]int, len(lens))
	for i, l := range lens {
		p[i], c[i], t[i] = int(l[0]), int(l[1]), int(l[0]+l[1])
	}
	return export.TokenStats{Prompt: export.Summarize(p), Completion: export.Summarize(c), Total: export.Summarize(t)}
}
