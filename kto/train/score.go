package train

import (
	"fmt"
	"io"

	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/ktoloader/ktoloader/export"
)

// ScoreOptions configure Score.
type ScoreOptions struct {
	DataDir string
	Split   Split // default train
	// Model, Offline, DType, Backend and Seed mean what they mean for Options; Adapter is a
	// PEFT adapter directory applied on top of the model.
	Model   string
	Adapter string
	Offline bool
	DType   string
	Backend string
	Seed    uint64
	// OnStatus receives short progress messages.
	OnStatus func(string)
}

// Score computes, for every example of a split, the completion log-prob sum of the target
// and of its KL pair under the model (plus adapter), in the rows of ref_logps/: what a
// reference pass on a GPU box produces once for every later run, or what a trained adapter
// gives on the test split. Rows come sorted by (batch_index, segment_example, kl).
func Score(opts ScoreOptions) (rows []RefRow, err error) {
	if perr := catchPanic(func() { rows, err = score(opts) }); perr != nil {
		err = perr
	}
	return rows, err
}

func score(opts ScoreOptions) ([]RefRow, error) {
	if opts.Split == "" {
		opts.Split = SplitTrain
	}
	o := Options{DataDir: opts.DataDir, Model: opts.Model, Adapter: opts.Adapter, Offline: opts.Offline,
		DType: opts.DType, Backend: opts.Backend, Seed: opts.Seed, OnStatus: opts.OnStatus}
	o.withDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	s := &runState{opts: o, status: o.OnStatus}
	if s.status == nil {
		s.status = func(string) {}
	}
	var err error
	if s.manifest, err = ReadManifest(o.DataDir); err != nil {
		return nil, err
	}
	files, _, err := s.manifest.CheckedShards(opts.Split)
	if err != nil {
		return nil, err
	}
	stats, err := ScanSplit(files)
	if err != nil {
		return nil, err
	}
	if stats.Batches == 0 {
		return nil, fmt.Errorf("%w: the %s split has no rows", ErrNoShards, opts.Split)
	}
	s.shape = Shape{MaxLen: s.manifest.MaxLen, BatchSize: s.manifest.BatchSize}
	if s.shape.MaxLen == 0 {
		s.shape.MaxLen = stats.MaxLen
	}
	if s.shape.BatchSize == 0 {
		s.shape.BatchSize = int(stats.MaxExample) + 1
	}
	vocab := s.manifest.VocabSize
	if vocab == 0 {
		vocab = int(stats.MaxTokenID) + 1
	}
	if s.src, err = ResolveModel(o.Model, vocab, s.shape.MaxLen, o.Offline, s.status); err != nil {
		return nil, err
	}
	s.model = s.src.Config
	if err := s.manifest.checkModel(s.src, s.status); err != nil {
		return nil, err
	}
	s.shape.VocabSize = s.model.VocabSize
	if err := s.checkModelFits(int(stats.MaxTokenID)); err != nil {
		return nil, err
	}
	if s.backend, err = NewBackend(o.Backend); err != nil {
		return nil, err
	}
	installDotGeneralVJP()
	s.ctx = context.New()
	dt := o.computeDType()
	s.net = Net{Config: s.model, DType: dt}
	if o.Adapter != "" {
		if s.net.LoRA, err = ReadAdapterConfig(o.Adapter); err != nil {
			return nil, err
		}
	}
	if err := s.checkHostMemory(); err != nil {
		return nil, err
	}
	// Nothing trains: the base goes in --dtype, as a LoRA run's frozen base does.
	if err := s.loadBase(s.ctx, dt); err != nil {
		return nil, err
	}
	if o.Adapter != "" {
		if err := LoadAdapter(s.ctx, s.backend, o.Adapter, s.model, s.net.LoRA); err != nil {
			return nil, err
		}
	}
	s.blockSize = defaultBlockSize
	ex := newShapedExec(s.backend, s.ctx, s.forwardGraph(s.net))
	defer ex.finalize()
	logps := refLogProbs{}
	br := NewBatchReader(files, s.shape)
	defer br.Close()
	zero := make([]float32, s.shape.BatchSize)
	for {
		b, err := br.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		outs, err := s.execBatch(ex, b, zero, zero)
		if err != nil {
			return nil, err
		}
		logps.add(b, tensors.MustCopyFlatData[float32](outs[0]), tensors.MustCopyFlatData[float32](outs[1]))
	}
	return logps.rows(), nil
}

// WriteRefRows writes rows as Parquet in the schema of ref_logps/{split}.parquet.
func WriteRefRows(path string, rows []RefRow) error {
	_, err := export.WriteParquetFile(path, rows)
	return err
}
