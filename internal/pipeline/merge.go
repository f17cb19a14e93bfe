package pipeline

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/internal/outdir"
	"github.com/ktoloader/ktoloader/kto"
	"github.com/ktoloader/ktoloader/tokenize"
)

// Merging the outputs of a sharded run (prep --num-shards N, once per --shard-index) into one
// output directory that verify accepts and trainers read like any other:
//
//   - sft/ shards are hard-linked (copied where links fail, or with Copy) under new names
//     that number them across the inputs: sft/train-00003-of-00016.parquet.
//   - kto/ and kto_packed/ are rewritten, because batch_index must count the batches of the
//     whole data set: the full batches of input 0 come first, then those of input 1, and so
//     on, each keeping its rows, KL pairs and packing; batch_index is offset. The inputs'
//     last, partial batches (at most N × (batch size − 1) examples) are planned again
//     together (kto.PlanBatches with the run's seed) into batches at the end, so only the
//     last batch of the merged set may be partial, as in any prep output. Inputs are shard
//     hashes of the data, so each is a uniform sample of the groups and this concatenation
//     is as well mixed as one run's order.
//   - The manifest sums the counts and rejects, recomputes the token, packing and batch
//     statistics from the rows written, merges the split statistics, and lists the new
//     files. Config is the inputs' (which must agree) without shard_index.
//   - rejects.jsonl is the inputs' files, concatenated in shard order.
//
// The inputs must be the N shards of one run: the same input files (sha256), tokenizer and
// flags, shard indices 0 … N−1 each once. The train/test split stays group-aware because a
// group never spans shards (see shard.go).

// MergeConfig is one merge.
type MergeConfig struct {
	Inputs []string // finished prep output directories, the shards of one run
	Out    string
	Force  bool // replace a finished run in Out
	Copy   bool // copy sft/ files rather than hard-link them
	// Dir, when set, is Out already opened (and locked) by the caller, which closes it.
	Dir *outdir.Dir
}

// Merge sentinel errors.
var (
	// ErrNotShards: the inputs are not the shards of one run.
	ErrNotShards = errors.New("not the shards of one run")
)

// shardRun is one input of a merge.
type shardRun struct {
	dir   string
	m     *export.Manifest
	index int
}

// Merge combines the shard outputs in cfg.Inputs into cfg.Out and returns its manifest. It
// does not verify the result; call export.Verify.
func Merge(cfg MergeConfig) (*export.Manifest, error) {
	runs, err := readShardRuns(cfg.Inputs)
	if err != nil {
		return nil, err
	}
	for _, r := range runs {
		if same, _ := sameDir(r.dir, cfg.Out); same {
			return nil, fmt.Errorf("merge: the output %s is one of the inputs", cfg.Out)
		}
	}
	d := cfg.Dir
	if d == nil {
		if d, err = outdir.Open(cfg.Out, outdir.Options{Force: cfg.Force}); err != nil {
			return nil, err
		}
		defer d.Close()
	}
	// The merged manifest does not record which directories it came from, so a finished
	// run in Out is replaced only with Force.
	if err := d.Replace(false); err != nil {
		return nil, err
	}
	first := runs[0].m
	m := export.NewManifest()
	m.Config = first.Config.WithoutShardIndex()
	m.Inputs = first.Inputs
	m.Tokenizer = first.Tokenizer
	kc, wopt, err := runConfig(first)
	if err != nil {
		return nil, err
	}
	wopt.BeforeRename = func(paths []string) error { return d.Record(paths...) }
	cfg.Dir = d // mergeSplit journals the sft/ links
	m.KTO.BatchSize = kc.BatchSize
	m.Packing.MaxLen = kc.MaxLen

	notes := map[string]int64{}
	for _, r := range runs {
		c := r.m.Counts
		m.Counts.Read += c.Read
		m.Counts.Written += c.Written
		m.Counts.Rejected += c.Rejected
		for k, n := range c.Reasons {
			m.Counts.Reasons[k] += n
		}
		for k, n := range c.Notes {
			if k != NoteSkippedOtherShard { // every row is some shard's: none is skipped by the whole
				notes[k] += n
			}
		}
	}
	if len(notes) > 0 {
		m.Counts.Notes = notes
	}
	wopt.LargeText = HasLargeText(m) // as prep of the whole input would: any run's large text

	if m.Split, err = mergeSplitStats(runs); err != nil {
		return nil, err
	}

	var lens tokenHists
	for _, split := range splits {
		files, err := mergeSplit(cfg, runs, split, kc, wopt, m, &lens)
		m.Files = append(m.Files, files...)
		if err != nil {
			return nil, err
		}
	}
	m.Tokens = lens.stats()
	if tr, ok := m.KTO.Splits["train"]; ok {
		m.KTO.DesirableWeight, m.KTO.UndesirableWeight = kto.SuggestWeights(int(tr.Desirable), int(tr.Undesirable))
	}
	if m.Rejects, err = concatRejects(runs, filepath.Join(cfg.Out, export.RejectsName), d); err != nil {
		return nil, err
	}
	m.Warnings = export.ComputeWarnings(m) // of the whole: a shard alone may lack a label the others have
	if err := export.WriteManifest(cfg.Out, m); err != nil {
		return nil, err
	}
	if err := d.Finish(); err != nil {
		return nil, err
	}
	return m, nil
}

// readShardRuns reads the inputs' manifests and checks that they are the shards of one run,
// returned in shard order.
func readShardRuns(dirs []string) ([]shardRun, error) {
	if len(dirs) == 0 {
		return nil, fmt.Errorf("%w: no inputs", ErrNotShards)
	}
	var runs []shardRun
	for _, d := range dirs {
		m, err := export.ReadManifest(d)
		if err != nil {
			return nil, err
		}
		c := m.Config
		if c.ShardIndex == nil || c.NumShards == 0 {
			return nil, fmt.Errorf("%w: %s was not written by a sharded run (prep --num-shards N --shard-index I)", ErrNotShards, d)
		}
		idx, n := *c.ShardIndex, c.NumShards
		if n != len(dirs) {
			return nil, fmt.Errorf("%w: %s is shard %d of %d, and %d outputs are given", ErrNotShards, d, idx, n, len(dirs))
		}
		runs = append(runs, shardRun{dir: d, m: m, index: idx})
	}
	slices.SortFunc(runs, func(a, b shardRun) int { return cmp.Compare(a.index, b.index) })
	ref := runs[0]
	refConfig := ref.m.Config.WithoutShardIndex()
	for i, r := range runs {
		if r.index != i {
			if i > 0 && runs[i-1].index == r.index {
				return nil, fmt.Errorf("%w: %s and %s are both shard %d", ErrNotShards, runs[i-1].dir, r.dir, r.index)
			}
			return nil, fmt.Errorf("%w: shard %d is missing", ErrNotShards, i)
		}
		if i == 0 {
			continue
		}
		if !slices.Equal(r.m.Inputs, ref.m.Inputs) {
			return nil, fmt.Errorf("%w: %s and %s read different inputs", ErrNotShards, ref.dir, r.dir)
		}
		if r.m.Tokenizer != ref.m.Tokenizer {
			return nil, fmt.Errorf("%w: %s and %s used different tokenizers", ErrNotShards, ref.dir, r.dir)
		}
		if c := r.m.Config.WithoutShardIndex(); c != refConfig {
			a, _ := json.Marshal(refConfig)
			b, _ := json.Marshal(c)
			return nil, fmt.Errorf("%w: %s and %s ran with different flags:\n  %s\n  %s", ErrNotShards, ref.dir, r.dir, a, b)
		}
	}
	return runs, nil
}

func sameDir(a, b string) (bool, error) {
	sa, err := os.Stat(a)
	if err != nil {
		return false, err
	}
	sb, err := os.Stat(b)
	if err != nil {
		return false, err
	}
	return os.SameFile(sa, sb), nil
}

// runConfig reads back the kto.Config and writer options a run used.
func runConfig(m *export.Manifest) (kto.Config, export.WriterOptions, error) {
	// The batch size and row length the run applied (defaults included), from the stats;
	// only the seed and the SFT loss from the flags.
	kc := kto.Config{BatchSize: m.KTO.BatchSize, MaxLen: m.Packing.MaxLen, Seed: m.Config.Seed, SFTLoss: m.Config.SFTLoss}
	kc, err := kc.WithDefaults()
	if err != nil {
		return kc, export.WriterOptions{}, fmt.Errorf("merge: the inputs' config: %w", err)
	}
	w, err := m.Config.Writer()
	return kc, w, err
}

// mergeSplitStats merges the inputs' kto.SplitStats: counts add up, strata by behavior and
// label.
func mergeSplitStats(runs []shardRun) (any, error) {
	var parts []kto.SplitStats
	for _, r := range runs {
		if r.m.Split == nil {
			continue
		}
		b, err := json.Marshal(r.m.Split)
		if err != nil {
			return nil, err
		}
		var s kto.SplitStats
		if err := json.Unmarshal(b, &s); err != nil {
			return nil, fmt.Errorf("%s: split: %w", r.dir, err)
		}
		parts = append(parts, s)
	}
	if parts == nil {
		return nil, nil
	}
	return sumSplitStats(parts), nil
}

// filesOf lists a run's files of one kind and split in shard order; primary only keeps the
// Parquet files when both formats were written.
func filesOf(m *export.Manifest, kind, split string, primary bool) []export.FileInfo {
	var fs []export.FileInfo
	hasParquet := false
	for _, f := range m.Files {
		if f.Kind == kind && f.Split == split && f.Format == export.FormatParquet {
			hasParquet = true
		}
	}
	for _, f := range m.Files {
		if f.Kind != kind || f.Split != split {
			continue
		}
		if primary && hasParquet && f.Format != export.FormatParquet {
			continue
		}
		fs = append(fs, f)
	}
	slices.SortFunc(fs, func(a, b export.FileInfo) int { return cmp.Compare(a.Path, b.Path) })
	return fs
}

// readRows streams the rows of files (in a run's directory) to fn.
func readRows[T any](dir string, files []export.FileInfo, fn func(*T) error) error {
	buf := make([]T, 256)
	for _, f := range files {
		r, err := export.OpenReader[T](filepath.Join(dir, filepath.FromSlash(f.Path)))
		if err != nil {
			return err
		}
		for {
			n, err := r.Read(buf)
			for i := 0; i < n; i++ {
				if ferr := fn(&buf[i]); ferr != nil {
					r.Close()
					return ferr
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				r.Close()
				return err
			}
		}
		if err := r.Close(); err != nil {
			return err
		}
	}
	return nil
}

// batchCounter accumulates a split's batch statistics from the rows as written.
type batchCounter struct {
	info      export.BatchInfo
	batchSize int
	cur       []kto.KTORow // the batch being written
}

func (c *batchCounter) add(r kto.KTORow) {
	if len(c.cur) > 0 && c.cur[0].BatchIndex != r.BatchIndex {
		c.close()
	}
	c.cur = append(c.cur, r)
}

// close counts the batch in cur: its labels and its cut KL completions (a KL completion
// shorter than the completion it pairs with, which BatchRows cuts to fit max_len).
func (c *batchCounter) close() {
	n := len(c.cur)
	if n == 0 {
		return
	}
	d := 0
	for j, r := range c.cur {
		if r.Label {
			d++
		}
		if prev := c.cur[(j+n-1)%n]; len(r.KLCompletionIDs) < len(prev.CompletionIDs) {
			c.info.KLTruncated++
		}
	}
	c.info.AddBatch(n, d)
	clear(c.cur)
	c.cur = c.cur[:0]
}

// mergeSplit writes one split of the merged output.
func mergeSplit(cfg MergeConfig, runs []shardRun, split string, kc kto.Config, wopt export.WriterOptions, m *export.Manifest, lens *tokenHists) (files []export.FileInfo, err error) {
	total := int64(0)
	for _, r := range runs {
		total += r.m.Counts.Splits[split].Examples
		m.KTO.Splits[split] = export.BatchInfo{Dropped: m.KTO.Splits[split].Dropped + r.m.KTO.Splits[split].Dropped}
	}
	if total == 0 {
		delete(m.KTO.Splits, split)
		return nil, nil
	}
	B := int64(kc.BatchSize)

	// kto/: the full batches of every run, batch_index offset, then the partial ones again.
	kw, err := export.NewShardWriter[kto.KTORow](cfg.Out, export.KindKTO, split, wopt)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			kw.Abort()
		}
	}()
	sc := export.SplitCounts{Behaviors: map[string]export.LabelCounts{}}
	bc := batchCounter{batchSize: kc.BatchSize}
	offsets := make([]int64, len(runs))
	partial := make([]int64, len(runs))
	var leftovers []tokenize.Example
	var leftSource []string // their shard source columns, written again as read
	var offset int64
	for i, r := range runs {
		bi := r.m.KTO.Splits[split]
		partial[i] = -1
		full := bi.Batches
		if bi.Batches > 0 && bi.LastBatch < B {
			partial[i] = bi.Batches - 1
			full--
		}
		offsets[i] = offset
		err := readRows(r.dir, filesOf(r.m, export.KindKTO, split, true), func(row *kto.KTORow) error {
			lens.add(len(row.PromptIDs), len(row.CompletionIDs))
			sc.Add(row.Behavior, row.Label)
			if row.BatchIndex == partial[i] {
				leftovers = append(leftovers, tokenize.Example{PromptIDs: row.PromptIDs, CompletionIDs: row.CompletionIDs,
					Label: row.Label, Behavior: row.Behavior, Prompt: row.Prompt, Completion: row.Completion})
				leftSource = append(leftSource, row.Source)
				return nil
			}
			if row.BatchIndex < 0 || row.BatchIndex >= full {
				return fmt.Errorf("%s: kto/%s: batch_index %d outside the %d batches its manifest lists", r.dir, split, row.BatchIndex, bi.Batches)
			}
			row.BatchIndex += offset
			bc.add(*row)
			return kw.Write(*row)
		})
		if err != nil {
			return nil, err
		}
		offset += full
	}
	// The partial batches, planned again together. The order of leftovers (by run, then
	// row) is fixed, and PlanBatches orders by content anyway.
	keys := make([]kto.Key, len(leftovers))
	for i := range leftovers {
		keys[i] = kto.KeyOf(&leftovers[i])
	}
	plan, _, err := kto.PlanBatches(keys, kc)
	if err != nil {
		return nil, err
	}
	var again [][]kto.KTORow
	for b, members := range plan {
		batch := make([]tokenize.Example, len(members))
		for k, j := range members {
			batch[k] = leftovers[j]
		}
		rows, _ := kto.BatchRows(batch, offset+int64(b), kc)
		for k := range rows { // BatchRows keeps the batch's order
			rows[k].Source = leftSource[members[k]]
			bc.add(rows[k])
		}
		if err := kw.Write(rows...); err != nil {
			return nil, err
		}
		again = append(again, rows)
	}
	bc.close()
	fi, err := kw.Close()
	files = append(files, fi...)
	if err != nil {
		return files, err
	}
	bi := bc.info
	bi.Dropped = m.KTO.Splits[split].Dropped
	m.KTO.Splits[split] = bi
	m.Counts.Splits[split] = sc

	// kto_packed/: the same batches, packed rows copied with their batch_index offset; the
	// partial batches packed again.
	pw, err := export.NewShardWriter[kto.PackedRow](cfg.Out, export.KindKTOPacked, split, wopt)
	if err != nil {
		return files, err
	}
	defer func() {
		if err != nil {
			pw.Abort()
		}
	}()
	var ps kto.PackStats
	ps.MaxLen = kc.MaxLen
	for i, r := range runs {
		err := readRows(r.dir, filesOf(r.m, export.KindKTOPacked, split, true), func(row *kto.PackedRow) error {
			if row.BatchIndex == partial[i] {
				return nil
			}
			row.BatchIndex += offsets[i]
			tokens := 0
			for _, s := range row.SegmentIDs {
				if s != 0 {
					tokens++
				}
			}
			ps.Add(kto.PackStats{PackCounts: kto.PackCounts{Rows: 1, Sequences: int64(len(row.SegmentLabel)), Tokens: int64(tokens)}})
			return pw.Write(*row)
		})
		if err != nil {
			return files, err
		}
	}
	for _, rows := range again {
		packed, st, err := kto.PackBatch(rows, kc)
		if err != nil {
			return files, err
		}
		ps.Add(st)
		if err := pw.Write(packed...); err != nil {
			return files, err
		}
	}
	fi, err = pw.Close()
	files = append(files, fi...)
	if err != nil {
		return files, err
	}
	m.Packing.KTOPacked[split] = ps.PackCounts

	// sft/: the runs' files, linked under names numbered across runs.
	fi, info, err := linkSFT(cfg, runs, split, kc.MaxLen)
	files = append(files, fi...)
	if err != nil {
		return files, err
	}
	m.Packing.SFT[split] = info
	return files, nil
}
