// Package pipeline is `ktoloader prep` as a library: it streams rows through validation,
// the Mistral template and the tokenizer (in parallel, output in input order), keeps the
// tokenized examples in a spill file, plans the split and the KTO batches on compact keys,
// and writes kto/, kto_packed/ and sft/ shards, rejects.jsonl and the manifest (last). Merge
// combines the outputs of a sharded run (Config.NumShards) into one.
//
// Pass one (pass1.go, stage.go): one goroutine splits the input into records; Workers
// goroutines parse, validate, render, place in a shard, tokenize, truncate, key and encode
// each record; one goroutine takes the results in input order, counts them, writes rejects
// and appends the encoded examples to the spill file. Pass two (write.go), per split: one
// goroutine reads each planned batch back from the spill and makes its kto/ rows, while
// three more write kto/, pack and write kto_packed/, and pack and write sft/.
//
// Memory. Up to Config.PartitionSize written examples (default 1,048,576), RAM holds per
// example its planning key (kto.Key: two hashes, the label and the interned behavior's
// string header, 40 bytes) and its offset in the spill (8 bytes), and planning adds, for a
// moment, what kto.PlanSplit and kto.PlanBatches need (per example about 30 bytes, per prompt
// group about 100): about 120 bytes an example at the peak, ~120 MB for a full partition.
// Past that size the keys go to bucket files on disk and pass two plans one partition at a
// time (partition.go), so that peak no longer grows with the input. Everything else is
// bounded whatever the input: Workers × 64 records (at most 256 MiB of raw lines) in
// flight, 64 batches queued per writer, one SFT window (kto.Config.SFTWindow sequences), one
// Parquet row group per writer (export.DefaultRowGroupRows rows), the tokenizer's bounded
// chunk caches, the lengths for the manifest's statistics as counts per length, and 256
// bucket-file buffers of 16 KiB. The examples themselves (ids, text) live in the spill file
// on disk, about 3 KB each. Measured at 1M rows: ~150 MB live at the planning peak
// (gctrace), 416 MiB peak RSS under the prep command's default soft heap limit of 384 MiB.
//
// It may import export, internal/rowpath, kto, tokenize and loader, but not kto/train: prep
// as a library does not pull in the trainer and GomlX. Only cmd/ktoloader imports it.
package pipeline

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/internal/outdir"
	"github.com/ktoloader/ktoloader/kto"
	"github.com/ktoloader/ktoloader/loader"
	"github.com/ktoloader/ktoloader/tokenize"
)

// Config is one prep run. Zero fields take defaults where one exists.
type Config struct {
	Inputs []Input // in order; each names how it is opened and recorded
	Loader loader.Config

	Tokenizer *tokenize.Tokenizer
	TokKind   string // how it was found (path, env, hf-cache, download, demo)
	TokSource string // as given or found, never an absolute path the user did not type
	TokDemo   bool
	Render    tokenize.Options
	KTO       kto.Config
	Out       string
	Force     bool // replace a finished run in Out that is not this same run (see SameRun)
	// Dir, when set, is Out already opened (and locked) by the caller, which closes it;
	// else Run opens Out itself (outdir.Open with Force and the inputs' paths).
	Dir        *outdir.Dir
	Writer     export.WriterOptions
	Rejects    string // path of the rejects file; "" means OUT/rejects.jsonl
	Workers    int    // default: all cores; never changes the output
	Strict     bool   // stop at the first rejected row
	MaxReject  float64
	ConfigEcho export.RunConfig // the flags to record in the manifest (all but workers)

	// NumShards > 1 makes this run one of NumShards that together process the input: it
	// keeps the rows whose shard (a hash of the rendered prompt; see shard.go) is
	// ShardIndex, in [0, NumShards), and counts the others in counts.notes as
	// skipped_other_shard. 0 or 1: every row.
	NumShards  int
	ShardIndex int

	// PartitionSize bounds the examples planned together (partition.go): a run with more
	// keeps its keys on disk and plans partitions of about this many, one at a time, so
	// memory does not grow with the input. 0: DefaultPartitionSize.
	PartitionSize int

	// Progress, when set, is called after each input row with the rows handled so far
	// (those of other shards included).
	Progress func(read int64)
}

// Input is one input: its recorded name (as given on the command line) and how to open it.
// Path is the file it reads, when it is one ("" for stdin or embedded data): no output ever
// replaces it.
type Input struct {
	Name string
	Open func(loader.Config) (*loader.Reader, error)
	Path string
}

// Sentinel errors of a run.
var (
	// ErrStrict: --strict and a row was rejected.
	ErrStrict = errors.New("stopped at the first rejected row (--strict)")
	// ErrTooManyRejects: more than --max-reject-frac of the rows were rejected.
	ErrTooManyRejects = errors.New("too many rejected rows (--max-reject-frac)")
	// ErrBadShard: ShardIndex is not in [0, NumShards), or NumShards is negative.
	ErrBadShard = errors.New("bad shard")
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
	if cfg.NumShards < 0 || cfg.ShardIndex < 0 || (cfg.NumShards > 1 && cfg.ShardIndex >= cfg.NumShards) || (cfg.NumShards <= 1 && cfg.ShardIndex != 0) {
		return nil, fmt.Errorf("%w: shard index %d of %d shards", ErrBadShard, cfg.ShardIndex, cfg.NumShards)
	}
	mistral, err := tokenize.NewMistral(cfg.Tokenizer, cfg.Render)
	if err != nil {
		return nil, err
	}
	d := cfg.Dir
	if d == nil {
		var paths []string
		for _, in := range cfg.Inputs {
			if in.Path != "" {
				paths = append(paths, in.Path)
			}
		}
		if d, err = outdir.Open(cfg.Out, outdir.Options{Inputs: paths, Force: cfg.Force}); err != nil {
			return nil, err
		}
		defer d.Close()
	}
	if err := d.Replace(SameRun(d.Prev, cfg)); err != nil {
		if errors.Is(err, export.ErrOutputExists) {
			err = fmt.Errorf("%w (made from other inputs, flags or tokenizer; an identical re-run replaces it without Force)", err)
		}
		return nil, err
	}
	cfg.Writer.BeforeRename = func(paths []string) error { return d.Record(paths...) }
	rejPath := cfg.Rejects
	if rejPath == "" {
		rejPath = filepath.Join(cfg.Out, export.RejectsName)
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
	m.Config = manifestConfig(cfg)
	m.Tokenizer = export.TokenizerInfo{Name: cfg.TokSource, Kind: cfg.TokKind, SHA256: cfg.Tokenizer.SHA256(),
		Demo: cfg.TokDemo, VocabSize: cfg.Tokenizer.VocabSize()}

	// Pass one: read, then on the workers parse, validate, render, tokenize, truncate and
	// encode; spill what passes, in input order.
	p1, err := passOne(cfg, mistral, sp, rej, m)
	if err != nil {
		return nil, err
	}
	keys := p1.keys
	if p1.store != nil {
		defer p1.store.Close()
		if err := p1.store.finish(); err != nil {
			return nil, err
		}
	}
	if err := sp.Finish(); err != nil {
		return nil, err
	}
	if len(p1.notes) > 0 {
		m.Counts.Notes = p1.notes
	}
	cfg.Writer.LargeText = HasLargeText(m)
	if cfg.MaxReject > 0 && m.Counts.Read > 0 && float64(m.Counts.Rejected) > cfg.MaxReject*float64(m.Counts.Read) {
		return nil, fmt.Errorf("%w: %d of %d rows (limit %.3g)", ErrTooManyRejects, m.Counts.Rejected, m.Counts.Read, cfg.MaxReject)
	}
	m.Tokens = p1.lens.stats()

	kc := cfg.KTO
	ktoCfg, _ := kc.WithDefaults()
	m.KTO.BatchSize = ktoCfg.BatchSize
	m.Packing.MaxLen = ktoCfg.MaxLen
	if p1.store != nil {
		// More examples than one planning partition: see partition.go.
		files, err := writePartitioned(cfg, ktoCfg, sp, rej, p1.store, m)
		m.Files = append(m.Files, files...)
		if err != nil {
			return nil, err
		}
	} else {
		// Plan the split on the keys, then each split's batches.
		isTest, splitStats, err := kto.PlanSplit(keys, cfg.KTO)
		if err != nil {
			return nil, err
		}
		m.Split = splitStats
		parts := partition(keys, isTest, splitStats.Test)
		p1.keys, keys, isTest = nil, nil, nil // parts own the keys now; writeSplit drops them once planned
		for i := range parts {
			if len(parts[i].keys) == 0 {
				continue
			}
			files, err := writeSplit(cfg, ktoCfg, sp, rej, &parts[i], m)
			m.Files = append(m.Files, files...)
			if err != nil {
				return nil, err
			}
		}
	}
	if tr, ok := m.KTO.Splits["train"]; ok {
		m.KTO.DesirableWeight, m.KTO.UndesirableWeight = kto.SuggestWeights(int(tr.Desirable), int(tr.Undesirable))
	}

	m.Rejects = rej.Info(d.RelPath(rejPath))
	if err := d.Record(rejPath); err != nil {
		return nil, err
	}
	m.Warnings = export.ComputeWarnings(m)
	if err := rej.Commit(); err != nil {
		return nil, err
	}
	if err := export.WriteManifest(cfg.Out, m); err != nil {
		return nil, err
	}
	if err := d.Finish(); err != nil {
		return nil, err
	}
	return m, nil
}

// splitPart is one split's examples: their keys and their indices in the spill.
type splitPart struct {
	name string
	keys []kto.Key
	idx  []int32 // nil: the identity (every example, in spill order)
}

// spillIndex is the spill index of the part's j-th example.
func (p *splitPart) spillIndex(j int) int {
	if p.idx == nil {
		return j
	}
	return int(p.idx[j])
}

// partition divides keys into the train and test parts without a second copy of the large
// side: test keys (the smaller side, nTest of them) are copied out and train keys are
// compacted in place. With no test examples train is keys itself, indices implied.
func partition(keys []kto.Key, isTest []bool, nTest int) []splitPart {
	if nTest == 0 {
		return []splitPart{{name: "train", keys: keys}}
	}
	test := splitPart{name: "test", keys: make([]kto.Key, 0, nTest), idx: make([]int32, 0, nTest)}
	train := splitPart{name: "train", idx: make([]int32, 0, len(keys)-nTest)}
	w := 0
	for i := range keys {
		if isTest[i] {
			test.keys = append(test.keys, keys[i])
			test.idx = append(test.idx, int32(i))
			continue
		}
		keys[w] = keys[i]
		train.idx = append(train.idx, int32(i))
		w++
	}
	clear(keys[w:]) // drop the behavior strings' references
	train.keys = keys[:w:w]
	return []splitPart{train, test}
}

const reasonDropLast = "drop_last"

type dropLastErr struct{}

func (dropLastErr) Error() string  { return "dropped by --drop-last" }
func (dropLastErr) Reason() string { return reasonDropLast }

var errDropLast error = dropLastErr{}
