package train

import (
	"fmt"

	"github.com/gomlx/gomlx/pkg/core/tensors"
)

// Micro-batching: a KTO batch's examples go through the policy's forward and backward
// passes MicroBatch at a time, their gradients accumulated before the one optimizer step,
// so a pass holds the activations of MicroBatch examples instead of the batch's.
//
// TRL's semantics stay whole-batch. z0, the KL estimate, is the mean over all the batch's
// KL pairs, and every example's loss depends on it, so a step runs in two phases: a KL pass
// (forward only, no gradient, as TRL computes the KL pairs' log-probs under no_grad) scores
// every micro-batch's KL pairs, and only then do the gradient passes run, each taking the
// whole batch's policy KL log-probs as an input (z0 detached, as in TRL). A gradient pass
// scores its micro-batch's targets only and returns its share of the batch loss: its
// examples' weighted losses divided by the whole batch's example count, so the shares (and
// their gradients) add up to the whole batch's. The price is a second forward over the
// targets (the KL pairs share their prompt blocks with their target, so the KL pass runs the
// targets' forward too): about one forward in four more than the single graph.
//
// A micro-batch is a run of consecutive example slots [j·M, (j+1)·M) with their targets and
// KL pairs; the reference log-probs stay per whole batch (forward-only graphs, cached).

// microPasses is the number of micro-batches per KTO batch (1: the batch in one pass).
func (s *runState) microPasses() int {
	m, b := s.opts.MicroBatch, s.shape.BatchSize
	if m <= 0 || m >= b {
		return 1
	}
	return (b + m - 1) / m
}

// passesPerStep is the number of gradient passes an optimizer step accumulates.
func (s *runState) passesPerStep() int { return s.opts.GradAccum * s.microPasses() }

// microPart is one micro-batch: its sequences and the mask of its slots.
type microPart struct {
	targets, kls []sequence
	need         layoutDims
	mask         []float32 // [BatchSize]: 1 on the micro-batch's slots
}

// microParts splits a batch's sequences by example slot into microPasses parts.
func (s *runState) microParts(b *Batch) []microPart {
	targets, kls := b.sequences(s.shape.MaxLen)
	m, n := s.opts.MicroBatch, s.microPasses()
	parts := make([]microPart, n)
	for j := range parts {
		p := &parts[j]
		lo, hi := int32(j*m), int32(min((j+1)*m, s.shape.BatchSize))
		in := func(sq sequence) bool { return sq.example >= lo && sq.example < hi }
		for _, t := range targets {
			if in(t) {
				p.targets = append(p.targets, t)
			}
		}
		for _, k := range kls {
			if in(k) {
				p.kls = append(p.kls, k)
			}
		}
		// Prefix indexes point into the part's own target list.
		sharePrefixes(p.targets, p.kls)
		p.need = layoutDims{needDims(p.targets, s.blockSize), needDims(p.kls, s.blockSize)}
		p.mask = make([]float32, s.shape.BatchSize)
		for i := lo; i < hi; i++ {
			p.mask[i] = 1
		}
	}
	return parts
}

// partLayout lays a part out: padded to fixedMicroDims, or to its own rounded sizes.
func (s *runState) partLayout(b *Batch, p *microPart) (batchLayout, error) {
	dims := layoutDims{p.need.Target.rounded(), p.need.KL.rounded()}
	if s.fixedMicroDims != nil {
		dims = *s.fixedMicroDims
		if !dims.Target.fits(p.need.Target) || !dims.KL.fits(p.need.KL) {
			return batchLayout{}, fmt.Errorf("batch %d: a micro-batch needs %+v, more than the %+v scanned", b.Index, p.need, dims)
		}
	}
	return newBatchLayout(p.targets, p.kls, s.blockSize, dims), nil
}

// stepBatch runs one KTO batch's gradient passes, the last of them applying the update
// when apply is set. It returns the batch's metric values (metricNodes' order, then the
// gradient norm).
func (s *runState) stepBatch(b *Batch, ref, refKL []float32, apply bool) ([]float64, error) {
	if s.hostHead {
		return s.hostStep(b, ref, refKL, apply)
	}
	if s.microPasses() == 1 {
		exec := s.trainEx
		if !apply {
			exec = s.accumEx
		}
		outs, err := s.execBatch(exec, b, ref, refKL)
		if err != nil {
			return nil, err
		}
		return scalars(outs), nil
	}
	parts := s.microParts(b)
	layouts := make([]batchLayout, len(parts))
	policyKL := make([]float32, s.shape.BatchSize)
	zero := make([]float32, s.shape.BatchSize)
	for j := range parts {
		l, err := s.partLayout(b, &parts[j])
		if err != nil {
			return nil, err
		}
		layouts[j] = l
		outs, err := s.klEx.run(layoutDims{l.Target.Dims, l.KL.Dims}, s.batchArgs(l, b, zero, zero))
		if err != nil {
			return nil, err
		}
		// Slots outside the part are 0 in its sums.
		for i, v := range tensors.MustCopyFlatData[float32](outs[0]) {
			policyKL[i] += v
		}
	}
	bt := func(x []float32) *tensors.Tensor { return tensors.FromFlatDataAndDimensions(x, s.shape.BatchSize) }
	var total []float64
	for j, l := range layouts {
		exec := s.accumMicroEx
		if apply && j == len(layouts)-1 {
			exec = s.trainMicroEx
		}
		args := append(groupArgs(&l.Target), bt(b.Desirable), bt(b.Present), bt(b.KLPresent), bt(ref), bt(refKL),
			bt(policyKL), bt(parts[j].mask))
		// The KL group's sizes are part of the key only for the KL pass; here any will do.
		outs, err := exec.run(layoutDims{Target: l.Target.Dims}, args)
		if err != nil {
			return nil, err
		}
		v := scalars(outs)
		if total == nil {
			total = v
			continue
		}
		// Loss shares and reward sums add up; z0 is the batch's in every pass; the norm
		// comes from the applying pass.
		for i := range v {
			if i != 1 {
				total[i] += v[i]
			}
		}
	}
	return total, nil
}

// scalars reads a step graph's scalar outputs.
func scalars(outs []*tensors.Tensor) []float64 {
	v := make([]float64, len(outs))
	for i, t := range outs {
		v[i] = float64(tensors.ToScalar[float32](t))
	}
	return v
}
