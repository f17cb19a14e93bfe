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
		get := func(j int) (tokenize.Example, error) { return sp.Get(part.spillIndex(j)) }
		if err := rejectDropped(get, rej, n, plan, m); err != nil {
			return nil, err
		}
	}
	w, err := newSplitWriter(cfg, kc, split)
	if err != nil {
		return nil, err
	}
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
			if !w.feed(batch, int64(b)) {
				return nil // a writer failed: finish says why
			}
		}
		return nil
	}()
	bstats.KLTruncated += int64(w.klCut)
	files, err = w.finish(feedErr)
	if err != nil {
		return files, err
	}
	w.record(m, bstats.BatchCounts)
	return files, nil
}

// splitWriter writes one split's batches, in the order fed, to its kto/, kto_packed/ and
// sft/ shard writers through one stage each.
type splitWriter struct {
	split     string
	kc        kto.Config
	kw        *export.ShardWriter[kto.KTORow]
	pw        *export.ShardWriter[kto.PackedRow]
	sw        *export.ShardWriter[kto.SFTRow]
	sft       *kto.SFTPacker
	packStats kto.PackStats
	failed    atomic.Bool
	stages    []*stage
	sc        export.SplitCounts
	klCut     int
}

func newSplitWriter(cfg Config, kc kto.Config, split string) (*splitWriter, error) {
	w := &splitWriter{split: split, kc: kc, sc: export.SplitCounts{Behaviors: map[string]export.LabelCounts{}}}
	var err error
	if w.kw, err = export.NewShardWriter[kto.KTORow](cfg.Out, export.KindKTO, split, cfg.Writer); err != nil {
		return nil, err
	}
	if w.pw, err = export.NewShardWriter[kto.PackedRow](cfg.Out, export.KindKTOPacked, split, cfg.Writer); err != nil {
		w.kw.Abort()
		return nil, err
	}
	if w.sw, err = export.NewShardWriter[kto.SFTRow](cfg.Out, export.KindSFT, split, cfg.Writer); err != nil {
		w.kw.Abort()
		w.pw.Abort()
		return nil, err
	}
	if w.sft, err = kto.NewSFTPacker(kc); err != nil {
		w.abort()
		return nil, err
	}
	w.stages = []*stage{
		startStage(&w.failed, func(b batchMsg) error { return w.kw.Write(b.rows...) }, nil),
		startStage(&w.failed, func(b batchMsg) error {
			packed, ps, err := kto.PackBatch(b.rows, kc)
			if err != nil {
				return err
			}
			w.packStats.Add(ps)
			return w.pw.Write(packed...)
		}, nil),
		startStage(&w.failed, func(b batchMsg) error {
			for _, ex := range b.des {
				rows, err := w.sft.Add(ex)
				if err != nil {
					return err
				}
				if err := w.sw.Write(rows...); err != nil {
					return err
				}
			}
			return nil
		}, func() error { return w.sw.Write(w.sft.Flush()...) }),
	}
	return w, nil
}

// feed makes the kto/ rows of one batch (its examples in row order) with batch index b and
// hands them to the stages. It returns false once a stage has failed: the caller stops
// feeding and finish reports the error.
func (w *splitWriter) feed(batch []tokenize.Example, b int64) bool {
	rows, klCut := kto.BatchRows(batch, b, w.kc)
	w.klCut += klCut
	msg := batchMsg{rows: rows}
	for k := range batch {
		ex := &batch[k]
		w.sc.Add(ex.Behavior, ex.Label)
		if ex.Label {
			msg.des = append(msg.des, ex)
		}
	}
	if w.failed.Load() {
		return false
	}
	for _, s := range w.stages {
		s.ch <- msg
	}
	return true
}

// finish waits for the stages and closes the writers (feedErr, an error of the caller's
// feeding, wins and aborts them). It returns the files written.
func (w *splitWriter) finish(feedErr error) (files []export.FileInfo, err error) {
	for _, s := range w.stages {
		if werr := s.wait(); err == nil {
			err = werr
		}
	}
	if feedErr != nil {
		err = feedErr
	}
	if err != nil {
		w.abort()
		return nil, err
	}
	for _, sw := range []interface {
		Close() ([]export.FileInfo, error)
	}{w.kw, w.pw, w.sw} {
		fi, err := sw.Close()
		files = append(files, fi...)
		if err != nil {
			w.abort()
			return files, err
		}
	}
	return files, nil
}

func (w *splitWriter) abort() {
	w.kw.Abort()
	w.pw.Abort()
	w.sw.Abort()
}

// record puts the split's counts, batch and packing statistics in the manifest.
func (w *splitWriter) record(m *export.Manifest, bi export.BatchInfo) {
	m.Counts.Splits[w.split] = w.sc
	m.KTO.Splits[w.split] = bi
	ss := w.sft.Stats()
	ps := w.packStats
	m.Packing.KTOPacked[w.split] = ps.PackCounts
	m.Packing.SFT[w.split] = ss.PackCounts
}

// rejectDropped accounts for the examples that --drop-last left out of the last, partial KTO
// batch: they are rejected (reason drop_last, in rejects.jsonl with their source), so that
// read = written + rejected still holds and nothing vanishes. The planned examples are 0 …
// n−1; get fetches example j from the spill.
func rejectDropped(get func(j int) (tokenize.Example, error), rej *Rejects, n int, plan [][]int, m *export.Manifest) error {
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
		ex, err := get(j)
		if err != nil {
			return err
		}
		re := &loader.RowError{Source: ex.Source, Err: errDropLast,
			Detail: "left out of the last, partial KTO batch by --drop-last"}
		m.Counts.Unwrite(reasonDropLast)
		if err := rej.Write(re); err != nil {
			return err
		}
	}
	return nil
}
