package train

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/ktoloader/ktoloader/export"
)

// RefMode says where the reference model's log-probs come from.
type RefMode string

const (
	// RefPrecomputed runs the frozen initial model over every batch of the train and test
	// splits before training (TRL's precompute_ref_log_probs), caches the results in
	// DATA/ref_logps/{split}.parquet, where later runs find them, and then frees the frozen
	// weights: training holds one model.
	RefPrecomputed RefMode = "precomputed"
	// RefLazy computes a batch's reference values when the batch is first used, one batch
	// ahead on a second goroutine, into the same cache: a short run on a large split
	// computes only what it uses, at the cost of holding the frozen weights for the run.
	RefLazy RefMode = "lazy"
	// RefOnTheFly keeps a frozen copy of the initial weights and runs it every step.
	RefOnTheFly RefMode = "on-the-fly"
)

// RefDir is the directory, beside kto_packed/, holding cached reference log-probs.
const RefDir = "ref_logps"

// refInitScheme names how InitVariables draws weights; it is part of the cache key, so a
// change of scheme invalidates cached reference log-probs.
const refInitScheme = "normal(initializer_range)/pcg(seed,fnv64a(scope))/hf-layout/v2"

// RefRow is one row of ref_logps/{split}.parquet: the reference model's summed completion
// log-prob for one sequence, keyed like the packed rows.
type RefRow struct {
	BatchIndex     int64   `parquet:"batch_index"`
	SegmentExample int32   `parquet:"segment_example"`
	KL             bool    `parquet:"kl"`
	LogP           float64 `parquet:"logp"`
}

type refKey struct {
	batch   int64
	example int32
	kl      bool
}

// refLogProbs maps (batch_index, segment_example, kl) to the reference log-prob.
type refLogProbs map[refKey]float64

// fill writes the batch's reference values into ref and refKL ([BatchSize]).
func (r refLogProbs) fill(b *Batch, ref, refKL []float32) error {
	for e := range b.Present {
		ref[e], refKL[e] = 0, 0
		for _, kl := range []bool{false, true} {
			present, dst := b.Present, ref
			if kl {
				present, dst = b.KLPresent, refKL
			}
			if present[e] == 0 {
				continue
			}
			v, ok := r[refKey{b.Index, int32(e), kl}]
			if !ok {
				return fmt.Errorf("%w: no reference log-prob for batch %d example %d kl=%v", ErrStaleRef, b.Index, e, kl)
			}
			dst[e] = float32(v)
		}
	}
	return nil
}

// add records the log-probs computed for a batch.
func (r refLogProbs) add(b *Batch, logp, logpKL []float32) {
	for e := range b.Present {
		if b.Present[e] != 0 {
			r[refKey{b.Index, int32(e), false}] = float64(logp[e])
		}
		if b.KLPresent[e] != 0 {
			r[refKey{b.Index, int32(e), true}] = float64(logpKL[e])
		}
	}
}

// rows returns the store as sorted rows.
func (r refLogProbs) rows() []RefRow {
	out := make([]RefRow, 0, len(r))
	for k, v := range r {
		out = append(out, RefRow{BatchIndex: k.batch, SegmentExample: k.example, KL: k.kl, LogP: v})
	}
	slices.SortFunc(out, func(a, b RefRow) int {
		switch {
		case a.BatchIndex != b.BatchIndex:
			return cmpInt(a.BatchIndex, b.BatchIndex)
		case a.SegmentExample != b.SegmentExample:
			return cmpInt(a.SegmentExample, b.SegmentExample)
		case a.KL != b.KL:
			if a.KL {
				return 1
			}
			return -1
		}
		return 0
	})
	return out
}

func cmpInt[T int32 | int64](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// ErrStaleRef marks reference log-probs that do not cover the data.
var ErrStaleRef = errors.New("reference log-probs do not match the data")

// refSidecar is ref_logps/{split}.json: what the cached log-probs were computed from. A
// cache is reused only when everything but Rows and ParquetSHA256 matches, and the Parquet
// file's hash is ParquetSHA256.
type refSidecar struct {
	Split          Split        `json:"split"`
	ManifestSHA256 string       `json:"manifest_sha256"`
	Shards         []shardStamp `json:"shards"`
	Model          ModelConfig  `json:"model"`
	Seed           uint64       `json:"seed"`
	Init           string       `json:"init"`
	// Weights fingerprints pretrained weights (weightsFingerprint; "" for random ones drawn
	// from Seed by Init); DType is the dtype the reference ran in.
	Weights       string `json:"weights,omitempty"`
	DType         string `json:"dtype,omitempty"`
	MaxLen        int    `json:"max_len"`
	BatchSize     int    `json:"batch_size"`
	Rows          int    `json:"rows"`
	ParquetSHA256 string `json:"parquet_sha256"`
}

// shardStamp identifies a shard: its manifest entry, checked against the file by
// Manifest.CheckedShards before the run reads it.
type shardStamp struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

func (s refSidecar) sameInputs(o refSidecar) bool {
	a, b := s, o
	a.Rows, a.ParquetSHA256, b.Rows, b.ParquetSHA256 = 0, "", 0, ""
	aj, _ := json.Marshal(a)
	bj, _ := json.Marshal(b)
	return string(aj) == string(bj)
}

func refPaths(dataDir string, split Split) (parquetPath, sidecarPath string) {
	dir := filepath.Join(dataDir, RefDir)
	return filepath.Join(dir, string(split)+".parquet"), filepath.Join(dir, string(split)+".json")
}

// loadRefCache returns the cached log-probs when the sidecar matches want, or nil.
func loadRefCache(dataDir string, want refSidecar) (refLogProbs, error) {
	pqPath, scPath := refPaths(dataDir, want.Split)
	data, err := os.ReadFile(scPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var have refSidecar
	if json.Unmarshal(data, &have) != nil || !have.sameInputs(want) {
		return nil, nil
	}
	_, sum, err := export.FileSHA256(pqPath)
	if err != nil || sum != have.ParquetSHA256 {
		return nil, nil // a missing or changed cache is recomputed, not an error
	}
	rows, err := export.ReadAll[RefRow](pqPath)
	if err != nil || len(rows) != have.Rows {
		return nil, nil
	}
	out := make(refLogProbs, len(rows))
	for _, r := range rows {
		out[refKey{r.BatchIndex, r.SegmentExample, r.KL}] = r.LogP
	}
	return out, nil
}

// saveRefCache writes the Parquet file, then the sidecar naming its hash.
func saveRefCache(dataDir string, sc refSidecar, logps refLogProbs) error {
	pqPath, scPath := refPaths(dataDir, sc.Split)
	if err := os.MkdirAll(filepath.Dir(pqPath), 0o755); err != nil {
		return err
	}
	rows := logps.rows()
	sum, err := export.WriteParquetFile(pqPath, rows)
	if err != nil {
		return err
	}
	sc.Rows, sc.ParquetSHA256 = len(rows), sum
	return export.WriteAtomic(scPath, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(sc)
	})
}

// refCache is a split's reference log-probs: those found in DATA/ref_logps/ (all, some or
// none of the split's batches) and those computed during the run, written back at the end.
type refCache struct {
	sidecar   refSidecar
	logps     refLogProbs
	dirty     bool // logps gained batches since loading
	announced bool // the computation was reported
}

// refBatch is a batch with its reference values ([BatchSize] each).
type refBatch struct {
	b          *Batch
	ref, refKL []float32
	computed   bool // by the frozen model, not from the cache
	err        error
}

// refFeed supplies batches with their reference values, preparing the next one (reading it
// and, unless cached, running the frozen model on it) on another goroutine while the caller
// works on the current one: on two cores the reference model costs little wall time. At
// most one preparation is in flight, so the frozen model's exec is never run twice at once.
type refFeed struct {
	compute func() refBatch
	ahead   chan refBatch // the preparation in flight, or nil
}

func (f *refFeed) start() {
	ch := make(chan refBatch, 1)
	f.ahead = ch
	compute := f.compute
	go func() {
		var r refBatch
		// GomlX reports graph errors by panicking, which would kill the process here.
		if err := catchPanic(func() { r = compute() }); err != nil {
			r = refBatch{err: err}
		}
		ch <- r
	}()
}

// get returns the next batch (err io.EOF after the last) and, if more, starts preparing
// the one after.
func (f *refFeed) get(more bool) refBatch {
	if f.ahead == nil {
		f.start()
	}
	r := <-f.ahead
	f.ahead = nil
	if more && r.err == nil {
		f.start()
	}
	return r
}

// wait lets the preparation in flight finish; get still returns it.
func (f *refFeed) wait() {
	if f.ahead != nil {
		r := <-f.ahead
		f.ahead = make(chan refBatch, 1)
		f.ahead <- r
	}
}

// stop waits for the preparation in flight and drops it.
func (f *refFeed) stop() {
	if f.ahead != nil {
		<-f.ahead
		f.ahead = nil
	}
}
