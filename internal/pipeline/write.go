package pipeline

import (
	"sync"
	"sync/atomic"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/kto"
	"github.com/ktoloader/ktoloader/loader"
	"github.com/ktoloader/ktoloader/tokenize"
)

// Pass two writes one split at a time. The goroutine that runs writeSplit fetches each
// batch's examples from the spill and makes its kto/ rows; three more goroutines, one per
// kind, write kto/, pack and write kto_packed/, and pack and write sft/. Each writer gets its
// rows in batch order, so the files do not depend on scheduling; the stages overlap, so
// Parquet encoding and zstd, which dominate this pass, use more than one core. Channels of
// writeAhead batches bound what is in flight.
const writeAhead = 64

// batchMsg is one batch on its way to the writers: its kto/ rows, and its desirable examples
// for sft/. Writers only read them.
type batchMsg struct {
	rows []kto.KTORow
	des  []*tokenize.Example
}

// stage runs fn on every message of its channel in its own goroutine. After the first error
// it drains the channel without working, so the sender never blocks; wait returns the error.
// failed is shared by the stages of a split: the feed stops once one has failed.
type stage struct {
	ch  chan batchMsg
	wg  sync.WaitGroup
	err error
}

func startStage(failed *atomic.Bool, fn func(batchMsg) error, flush func() error) *stage {
	s := &stage{ch: make(chan batchMsg, writeAhead)}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for msg := range s.ch {
			if s.err == nil {
				if s.err = fn(msg); s.err != nil {
					failed.Store(true)
				}
			}
		}
		if s.err == nil && flush != nil {
			s.err = flush()
		}
	}()
	return s
}

// wait closes the channel and waits for the stage to finish.
func (s *stage) wait() error {
	close(s.ch)
	s.wg.Wait()
	return s.err
}

// writeSplit plans one split's KTO batches and writes its kto/, kto_packed/ and sft/ shards.
// It drops part.keys once the plan is made.
func writeSplit(cfg Config, kc kto.Config, sp *spill, rej *Rejects, part *splitPart, m *export.Manifest) (files []export.FileInfo, err error) {
	split := part.name
	plan, bstats, err := kto.PlanBatches(part.keys, kc)
	if err != nil {
		return nil, err
	}
	n := len(part.keys)
	part.keys = nil
	if bstats.Dropped > 0 {
		if err := rejectDropped(sp, rej, part, n, plan, m); err != nil {
			return nil, err
		}
	}
	kw, err := export.NewShardWriter[kto.KTORow](cfg.Out, export.KindKTO, split, cfg.Writer)
	if err != nil {
		return nil, err
	}
	pw, err := export.NewShardWriter[kto.PackedRow](cfg.Out, export.KindKTOPacked, split, cfg.Writer)
	if err != nil {
		kw.Abort()
		return nil, err
	}
	sw, err := export.NewShardWriter[kto.SFTRow](cfg.Out, export.KindSFT, split, cfg.Writer)
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

	var packStats kto.PackStats
	var failed atomic.Bool
	stages := []*stage{
		startStage(&failed, func(b batchMsg) error { return kw.Write(b.rows...) }, nil),
		startStage(&failed, func(b batchMsg) error {
			packed, ps, err := kto.PackBatch(b.rows, kc)
			if err != nil {
				return err
			}
			packStats.Add(ps)
			return pw.Write(packed...)
		}, nil),
		startStage(&failed, func(b batchMsg) error {
			for _, ex := range b.des {
				rows, err := sft.Add(ex)
				if err != nil {
					return err
				}
				if err := sw.Write(rows...); err != nil {
					return err
				}
			}
			return nil
		}, func() error { return sw.Write(sft.Flush()...) }),
	}
	sc := export.SplitCounts{Behaviors: map[string]export.LabelCounts{}}
	feedErr := func() error {
		for b, members := range plan {
			batch := make([]tokenize.Example, len(members))
			for k, j := range members {
				ex, err := sp.Get(part.spillIndex(j))
				if err != nil {
					return err
				}
				batch[k] = ex
			}
			rows, klCut := kto.BatchRows(batch, int64(b), kc)
			bstats.KLTruncated += klCut
			msg := batchMsg{rows: rows}
			for k := range batch {
				ex := &batch[k]
				sc.Examples++
				lc := sc.Behaviors[ex.Behavior]
				if ex.Label {
					sc.Desirable++
					lc.Desirable++
					msg.des = append(msg.des, ex)
				} else {
					sc.Undesirable++
					lc.Undesirable++
				}
				sc.Behaviors[ex.Behavior] = lc
			}
			// A failed writer stops the feed early; the error surfaces from wait.
			if failed.Load() {
				return nil
			}
			for _, s := range stages {
				s.ch <- msg
			}
		}
		return nil
	}()
	for _, s := range stages {
		if werr := s.wait(); err == nil {
			err = werr
		}
	}
	if feedErr != nil {
		return nil, feedErr
	}
	if err != nil {
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
// read = written + rejected still holds and nothing vanishes. n is the part's size.
func rejectDropped(sp *spill, rej *Rejects, part *splitPart, n int, plan [][]int, m *export.Manifest) error {
	in := make([]bool, n)
	for _, b := range plan {
		for _, j := range b {
			in[j] = true
		}
	}
	for j, ok := range in {
		if ok {
			continue
		}
		ex, err := sp.Get(part.spillIndex(j))
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
