package train

import (
	"fmt"
	"io"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"
)

// maxGraphsPerExec bounds the graphs a shapedExec keeps. A context.Exec compiles one graph
// per input shape and never evicts one, and on the CPU backend most batches get a shape of
// their own; compiling there takes milliseconds, so a full exec is simply rebuilt.
var maxGraphsPerExec = 64 // a variable for tests

// shapedExec runs a graph function for batches of any layout, keeping at most
// maxGraphsPerExec compiled shapes.
type shapedExec struct {
	backend backends.Backend
	ctx     *context.Context
	fn      func(*context.Context, []*graph.Node) []*graph.Node
	exec    *context.Exec
	seen    map[layoutDims]bool
	builds  int // context.Exec objects built
}

func newShapedExec(b backends.Backend, ctx *context.Context, fn func(*context.Context, []*graph.Node) []*graph.Node) *shapedExec {
	return &shapedExec{backend: b, ctx: ctx, fn: fn, seen: map[layoutDims]bool{}}
}

func (e *shapedExec) run(dims layoutDims, args []any) ([]*tensors.Tensor, error) {
	if !e.seen[dims] && len(e.seen) >= maxGraphsPerExec {
		e.finalize()
		// The variables (optimizer state included) exist by now: the rebuilt exec reuses them.
		e.ctx = e.ctx.Reuse()
	}
	if e.exec == nil {
		exec, err := context.NewExec(e.backend, e.ctx, e.fn)
		if err != nil {
			return nil, err
		}
		e.exec = exec.SetMaxCache(-1)
		e.builds++
	}
	e.seen[dims] = true
	return e.exec.Exec(args...)
}

func (e *shapedExec) finalize() {
	if e.exec != nil {
		e.exec.Finalize()
		e.exec = nil
	}
	clear(e.seen)
}

// scanLayouts sets fixedDims to sizes that fit every batch of both splits.
func (s *runState) scanLayouts() error {
	s.status("scanning batch shapes")
	var most, mostMicro layoutDims
	for split, files := range [][]string{s.train, s.test} {
		if files == nil {
			continue
		}
		br := NewBatchReader(files, s.shape)
		for {
			b, err := br.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				br.Close()
				return err
			}
			_, _, need := b.layoutNeed(s.shape.MaxLen, s.blockSize)
			most = layoutDims{most.Target.max(need.Target), most.KL.max(need.KL)}
			if split == 0 && s.microPasses() > 1 {
				for _, p := range s.microParts(b) {
					mostMicro = layoutDims{mostMicro.Target.max(p.need.Target), mostMicro.KL.max(p.need.KL)}
				}
			}
		}
		br.Close()
	}
	s.fixedDims = &layoutDims{most.Target.rounded(), most.KL.rounded()}
	s.fixedMicroDims = &layoutDims{mostMicro.Target.rounded(), mostMicro.KL.rounded()}
	return nil
}

// layout lays a batch out for the graphs: padded to fixedDims, or to its own rounded sizes.
func (s *runState) layout(b *Batch) (batchLayout, error) {
	targets, kls, need := b.layoutNeed(s.shape.MaxLen, s.blockSize)
	dims := layoutDims{need.Target.rounded(), need.KL.rounded()}
	if s.fixedDims != nil {
		dims = *s.fixedDims
		if !dims.Target.fits(need.Target) || !dims.KL.fits(need.KL) {
			return batchLayout{}, fmt.Errorf("batch %d needs %+v, more than the %+v scanned", b.Index, need, dims)
		}
	}
	return newBatchLayout(targets, kls, s.blockSize, dims), nil
}

// batchArgs converts a batch to the graph inputs.
func (s *runState) batchArgs(l batchLayout, b *Batch, ref, refKL []float32) []any {
	bt := func(x []float32) *tensors.Tensor { return tensors.FromFlatDataAndDimensions(x, s.shape.BatchSize) }
	args := append(groupArgs(&l.Target), groupArgs(&l.KL)...)
	return append(args, bt(b.Desirable), bt(b.Present), bt(b.KLPresent), bt(ref), bt(refKL))
}

// groupArgs are a seqGroup's graph inputs, in the order of the in* offsets.
func groupArgs(gr *seqGroup) []any {
	vec := func(x []int32) *tensors.Tensor { return tensors.FromFlatDataAndDimensions(x, len(x)) }
	bs := gr.BlockSize
	return []any{vec(gr.InputIDs), vec(gr.PositionIDs), vec(gr.PairQuery), vec(gr.PairKey),
		tensors.FromFlatDataAndDimensions(gr.PairBias, gr.Dims.Pairs, bs, bs),
		vec(gr.LabelPos), vec(gr.Labels), vec(gr.Slots)}
}

// execBatch lays a batch out and runs e on it.
func (s *runState) execBatch(e *shapedExec, b *Batch, ref, refKL []float32) ([]*tensors.Tensor, error) {
	l, err := s.layout(b)
	if err != nil {
		return nil, err
	}
	return e.run(layoutDims{l.Target.Dims, l.KL.Dims}, s.batchArgs(l, b, ref, refKL))
}
