package train

import (
	"fmt"
	"path/filepath"

	"github.com/gomlx/gomlx/pkg/core/tensors"
)

// refForward runs the frozen reference on a batch.
func (s *runState) refForward(b *Batch) (logp, logpKL []float32, err error) {
	if s.hostHead {
		return s.hostRefForward(b)
	}
	zero := make([]float32, s.shape.BatchSize)
	outs, err := s.execBatch(s.refEx, b, zero, zero)
	if err != nil {
		return nil, nil, err
	}
	return tensors.MustCopyFlatData[float32](outs[0]), tensors.MustCopyFlatData[float32](outs[1]), nil
}

// openRefCache loads the split's cached reference log-probs, or starts an empty cache.
func (s *runState) openRefCache(split Split, stamps []shardStamp) (*refCache, error) {
	sc := refSidecar{Split: split, ManifestSHA256: s.manifest.SHA256, Shards: stamps, Model: s.model,
		Seed: s.opts.Seed, Init: refInitScheme, Weights: s.src.Fingerprint, DType: s.opts.DType, MaxLen: s.shape.MaxLen, BatchSize: s.shape.BatchSize}
	cached, err := loadRefCache(s.opts.DataDir, sc)
	if err != nil {
		return nil, err
	}
	if cached != nil {
		s.status(fmt.Sprintf("reusing reference log-probs %s (%d sequences)", filepath.Join(RefDir, string(split)+".parquet"), len(cached)))
	} else {
		cached = refLogProbs{}
	}
	return &refCache{sidecar: sc, logps: cached}, nil
}

// batchRefs returns the batch's reference values: cached, or computed by the frozen model
// (and then cached). computed says which.
func (s *runState) batchRefs(b *Batch, cache *refCache) (ref, refKL []float32, computed bool, err error) {
	if cache != nil {
		ref, refKL = make([]float32, s.shape.BatchSize), make([]float32, s.shape.BatchSize)
		if cache.logps.fill(b, ref, refKL) == nil {
			return ref, refKL, false, nil
		}
	}
	if s.refEx == nil {
		// precomputeRefs covered every batch of both splits; the data changed under the run.
		return nil, nil, false, &DataError{Row: -1, Batch: b.Index,
			Err: fmt.Errorf("%w: no precomputed reference log-probs for this batch", ErrBadShard)}
	}
	if ref, refKL, err = s.refForward(b); err != nil {
		return nil, nil, false, err
	}
	if cache != nil {
		cache.logps.add(b, ref, refKL)
		cache.dirty = true
	}
	return ref, refKL, true, nil
}

// newRefFeed feeds batches from next with their reference values.
func (s *runState) newRefFeed(cache *refCache, next func() (*Batch, error)) *refFeed {
	return &refFeed{compute: func() refBatch {
		b, err := next()
		if err != nil {
			return refBatch{err: err}
		}
		r := refBatch{b: b}
		r.ref, r.refKL, r.computed, r.err = s.batchRefs(b, cache)
		return r
	}}
}

// announceRefs reports, once per split, that reference log-probs are being computed.
func (s *runState) announceRefs(r refBatch, cache *refCache, split Split) {
	if !r.computed || (cache != nil && cache.announced) {
		return
	}
	if cache == nil {
		if split == SplitTrain && !s.announcedOnTheFly {
			s.announcedOnTheFly = true
			s.status("computing reference log-probs on the fly (frozen initial weights)")
		}
		return
	}
	cache.announced = true
	s.status(fmt.Sprintf("computing reference log-probs for %s as batches are first used (cached in %s)",
		split, filepath.Join(RefDir, string(split)+".parquet")))
}

// saveRefCaches writes the caches that gained batches. A cache that cannot be written
// (read-only data) is only reported.
func (s *runState) saveRefCaches() {
	for _, c := range []*refCache{s.refTrain, s.refTest} {
		if c == nil || !c.dirty {
			continue
		}
		if err := saveRefCache(s.opts.DataDir, c.sidecar, c.logps); err != nil {
			s.status(fmt.Sprintf("could not cache reference log-probs: %v", err))
			continue
		}
		c.dirty = false
	}
}
