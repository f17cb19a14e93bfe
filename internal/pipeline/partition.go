package pipeline

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/internal/stablehash"
	"github.com/ktoloader/ktoloader/kto"
	"github.com/ktoloader/ktoloader/tokenize"
)

// Partitioned planning: what keeps memory bounded whatever the input size.
//
// The split and the batch plan need every example's key (kto.Key, ~48 bytes with its spill
// offset). Up to Config.PartitionSize examples they are planned together in RAM, as one set.
// A larger input moves its keys, as pass one goes, to numBuckets bucket files on disk, by a
// hash of the prompt group, so a group never spans two buckets. Pass two then plans
// partitions (runs of consecutive buckets of at most PartitionSize examples, one bucket
// alone if larger) one after another: each partition's split (group-aware and stratified,
// as in one set), then, per split, its batches. Every partition's full batches are written
// in partition order, batch_index counting on; the partitions' last, partial batches are
// planned again together and written at the end, so only a split's last batch may be
// partial, as in an unpartitioned run. RAM then holds one partition's keys at a time.
//
// Each partition is a uniform random sample of the data (buckets are a hash of the group),
// so training order, which runs through the partitions in turn, stays a shuffle of the whole
// set at the level of batches. The output depends on PartitionSize (recorded in the
// manifest's config) and never on --workers.

// NotePlanningPartitions is the manifest note (counts.notes) of a partitioned run: how many
// partitions were planned.
const NotePlanningPartitions = "planning_partitions"

// DefaultPartitionSize is Config.PartitionSize's default: 1,048,576 examples plan in about
// 120 MB at the peak.
const DefaultPartitionSize = 1 << 20

// numBuckets is the number of key files of a partitioned run: with the default partition
// size, partitions stay near their size up to ~250M examples.
const numBuckets = 256

// keyRecSize is a key on disk: group, hash, spill offset (8 bytes each), record length and
// behavior index (4 each), label (1).
const keyRecSize = 8 + 8 + 8 + 4 + 4 + 1

// loc is where an example's record is in the spill.
type loc struct {
	off int64
	n   uint32
}

// keyStore holds the keys of a partitioned run in bucket files.
type keyStore struct {
	dir       string
	files     [numBuckets]*os.File
	w         [numBuckets]*bufio.Writer
	count     [numBuckets]int
	behaviors []string
	index     map[string]uint32
	rec       [keyRecSize]byte
}

func newKeyStore(dir string) (*keyStore, error) {
	ks := &keyStore{dir: dir, index: map[string]uint32{}}
	for b := range numBuckets {
		f, err := os.CreateTemp(dir, export.TempPattern(fmt.Sprintf("keys-%03d", b)))
		if err != nil {
			ks.Close()
			return nil, err
		}
		ks.files[b], ks.w[b] = f, bufio.NewWriterSize(f, 16<<10)
	}
	return ks, nil
}

// bucketOf places a group: the top bits of splitMix of the group hash (shards of a sharded
// run use its low bits, the value modulo their count, so every bucket is used in each shard).
func bucketOf(group uint64) int { return int(stablehash.SplitMix(group) >> 56) }

func (ks *keyStore) add(k kto.Key, l loc) error {
	bi, ok := ks.index[k.Behavior]
	if !ok {
		bi = uint32(len(ks.behaviors))
		ks.behaviors = append(ks.behaviors, k.Behavior)
		ks.index[k.Behavior] = bi
	}
	r := ks.rec[:]
	binary.LittleEndian.PutUint64(r[0:], k.Group)
	binary.LittleEndian.PutUint64(r[8:], k.Hash)
	binary.LittleEndian.PutUint64(r[16:], uint64(l.off))
	binary.LittleEndian.PutUint32(r[24:], l.n)
	binary.LittleEndian.PutUint32(r[28:], bi)
	r[32] = 0
	if k.Label {
		r[32] = 1
	}
	b := bucketOf(k.Group)
	ks.count[b]++
	_, err := ks.w[b].Write(r)
	return err
}

// finish flushes the bucket files.
func (ks *keyStore) finish() error {
	for _, w := range ks.w {
		if err := w.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// partitions groups consecutive buckets into partitions of at most size keys (a bucket
// larger than size alone): each is [first, end) bucket.
func (ks *keyStore) partitions(size int) [][2]int {
	var out [][2]int
	first, n := 0, 0
	for b := range numBuckets {
		if n > 0 && n+ks.count[b] > size {
			out = append(out, [2]int{first, b})
			first, n = b, 0
		}
		n += ks.count[b]
	}
	if n > 0 {
		out = append(out, [2]int{first, numBuckets})
	}
	return out
}

// load reads the keys of buckets [first, end), bucket by bucket, each in input order.
func (ks *keyStore) load(p [2]int) ([]kto.Key, []loc, error) {
	n := 0
	for b := p[0]; b < p[1]; b++ {
		n += ks.count[b]
	}
	keys, locs := make([]kto.Key, 0, n), make([]loc, 0, n)
	for b := p[0]; b < p[1]; b++ {
		r := bufio.NewReaderSize(io.NewSectionReader(ks.files[b], 0, int64(ks.count[b])*keyRecSize), 64<<10)
		var rec [keyRecSize]byte
		for range ks.count[b] {
			if _, err := io.ReadFull(r, rec[:]); err != nil {
				return nil, nil, fmt.Errorf("key file %d: %w", b, err)
			}
			bi := binary.LittleEndian.Uint32(rec[28:])
			if int(bi) >= len(ks.behaviors) {
				return nil, nil, fmt.Errorf("key file %d: %w", b, errCorruptSpill)
			}
			keys = append(keys, kto.Key{Group: binary.LittleEndian.Uint64(rec[0:]), Hash: binary.LittleEndian.Uint64(rec[8:]),
				Label: rec[32] == 1, Behavior: ks.behaviors[bi]})
			locs = append(locs, loc{off: int64(binary.LittleEndian.Uint64(rec[16:])), n: binary.LittleEndian.Uint32(rec[24:])})
		}
	}
	return keys, locs, nil
}

// Close removes the bucket files.
func (ks *keyStore) Close() error {
	var errs []error
	for _, f := range ks.files {
		if f == nil {
			continue
		}
		name := f.Name()
		errs = append(errs, f.Close())
		if err := os.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// writePartitioned is pass two of a partitioned run: the split statistics, then each split's
// shards, as the comment at the top of this file describes.
func writePartitioned(cfg Config, kc kto.Config, sp *spill, rej *Rejects, ks *keyStore, m *export.Manifest) ([]export.FileInfo, error) {
	size := cfg.PartitionSize
	if size <= 0 {
		size = DefaultPartitionSize
	}
	parts := ks.partitions(size)
	if m.Counts.Notes == nil {
		m.Counts.Notes = map[string]int64{}
	}
	m.Counts.Notes[NotePlanningPartitions] = int64(len(parts))
	// The split, partition by partition, once for the statistics and each partition's
	// carry (what earlier partitions owe each stratum); each split's writing below plans it
	// again with the same carry (deterministic, and cheaper than keeping the flags).
	var splitStats []kto.SplitStats
	carries := make([]kto.SplitCarry, len(parts))
	carry := kto.SplitCarry{}
	testSeen := false
	for i, p := range parts {
		keys, _, err := ks.load(p)
		if err != nil {
			return nil, err
		}
		carries[i] = maps.Clone(carry)
		_, st, err := kto.PlanSplitCarry(keys, cfg.KTO, carries[i])
		if err != nil {
			return nil, err
		}
		carry.Add(st)
		splitStats = append(splitStats, st)
		testSeen = testSeen || st.Test > 0
	}
	m.Split = sumSplitStats(splitStats)
	var files []export.FileInfo
	splits := []bool{false}
	if testSeen {
		splits = append(splits, true)
	}
	for _, test := range splits {
		fi, err := writePartitionedSplit(cfg, kc, sp, rej, ks, parts, carries, test, m)
		files = append(files, fi...)
		if err != nil {
			return files, err
		}
	}
	return files, nil
}

// writePartitionedSplit writes the train (test false) or test split of a partitioned run.
func writePartitionedSplit(cfg Config, kc kto.Config, sp *spill, rej *Rejects, ks *keyStore, parts [][2]int, carries []kto.SplitCarry, test bool, m *export.Manifest) (files []export.FileInfo, err error) {
	name := "train"
	if test {
		name = "test"
	}
	w, err := newSplitWriter(cfg, kc, name)
	if err != nil {
		return nil, err
	}
	var count export.BatchInfo
	next := int64(0) // batch_index
	feed := func(plan [][]int, locs []loc) (bool, error) {
		for _, members := range plan {
			batch := make([]tokenize.Example, len(members))
			for k, j := range members {
				ex, err := sp.GetAt(locs[j].off, locs[j].n)
				if err != nil {
					return false, err
				}
				batch[k] = ex
			}
			d := 0
			for k := range batch {
				if batch[k].Label {
					d++
				}
			}
			count.AddBatch(len(batch), d)
			if !w.feed(batch, next) {
				return false, nil
			}
			next++
		}
		return true, nil
	}
	// Partitions plan without DropLast: their partial batches are not the split's last.
	partKC := kc
	partKC.DropLast = false
	var restKeys []kto.Key
	var restLocs []loc
	feedErr := func() error {
		for i, p := range parts {
			keys, locs, err := ks.load(p)
			if err != nil {
				return err
			}
			isTest, _, err := kto.PlanSplitCarry(keys, cfg.KTO, carries[i])
			if err != nil {
				return err
			}
			kept := 0
			for i := range keys {
				if isTest[i] == test {
					keys[kept], locs[kept] = keys[i], locs[i]
					kept++
				}
			}
			keys, locs = keys[:kept], locs[:kept]
			if len(keys) == 0 {
				continue
			}
			plan, _, err := kto.PlanBatches(keys, partKC)
			if err != nil {
				return err
			}
			full := plan[:0:0]
			for _, b := range plan {
				if len(b) == kc.BatchSize {
					full = append(full, b)
					continue
				}
				for _, j := range b {
					restKeys, restLocs = append(restKeys, keys[j]), append(restLocs, locs[j])
				}
			}
			if ok, err := feed(full, locs); !ok || err != nil {
				return err
			}
		}
		if len(restKeys) == 0 {
			return nil
		}
		plan, bst, err := kto.PlanBatches(restKeys, kc)
		if err != nil {
			return err
		}
		if bst.Dropped > 0 {
			get := func(j int) (tokenize.Example, error) { return sp.GetAt(restLocs[j].off, restLocs[j].n) }
			if err := rejectDropped(get, rej, len(restLocs), plan, m); err != nil {
				return err
			}
			count.Dropped = bst.Dropped
		}
		_, err = feed(plan, restLocs)
		return err
	}()
	count.KLTruncated = int64(w.klCut)
	files, err = w.finish(feedErr)
	if err != nil {
		return files, err
	}
	w.record(m, count)
	return files, nil
}

// sumSplitStats adds up the partitions' split statistics (strata by behavior and label, in
// kto.PlanSplit's report order).
func sumSplitStats(parts []kto.SplitStats) kto.SplitStats {
	var out kto.SplitStats
	idx := map[[2]any]int{}
	for _, s := range parts {
		out.TestFrac = s.TestFrac
		out.Groups += s.Groups
		out.TestGroups += s.TestGroups
		out.Train += s.Train
		out.Test += s.Test
		for _, st := range s.Strata {
			k := [2]any{st.Behavior, st.Label}
			i, ok := idx[k]
			if !ok {
				i = len(out.Strata)
				idx[k] = i
				out.Strata = append(out.Strata, kto.Stratum{Behavior: st.Behavior, Label: st.Label})
			}
			out.Strata[i].Total += st.Total
			out.Strata[i].Test += st.Test
		}
	}
	for i := range out.Strata {
		if st := &out.Strata[i]; st.Total > 0 {
			st.TestFrac = float64(st.Test) / float64(st.Total)
		}
	}
	sortStrata(out.Strata)
	return out
}

// sortStrata puts strata in kto.PlanSplit's report order.
func sortStrata(strata []kto.Stratum) {
	slices.SortFunc(strata, func(a, b kto.Stratum) int {
		return kto.StratumKey{Behavior: a.Behavior, Label: a.Label}.Compare(kto.StratumKey{Behavior: b.Behavior, Label: b.Label})
	})
}
