package train

import (
	"math/bits"
)

// The graphs do not see prep's packed rows. Attention over a packed row of T tokens costs
// T² scores per head whatever the row holds, and on the CPU backend it was most of a step:
// rows of 512 hold one or two sequences of ~350 tokens, a causal sequence needs under half
// of its square, and padding needs none. So before each batch reaches a graph, its sequences
// are laid out again, host side, in blocks of blockSize tokens, each sequence starting a
// new block, and attention runs over (query block, key block) pairs of the same sequence
// with the key block at or before the query block: block-sparse attention, about 3.5× fewer
// scores on the demo data (ModelConfig.TokenLogProbs combines the pairs of a query block
// exactly, as flash attention does).
//
// Targets and KL pairs go in two separate groups: the loss takes the KL pairs' log-probs
// without gradient (TRL computes them under no_grad), so their group is only run forward
// and the backward pass covers half the tokens.
//
// Only scored positions matter, and a position sees nothing after it: a sequence's tokens
// after its last scored position are left out, and a sequence with no scored position
// (nothing of its completion left) is dropped. Both change no log-prob.

// defaultBlockSize is the attention block, in tokens. On the CPU backend 32 beat 16 (many
// more, smaller products) and 64 (more masked scores) on rows of 512.
const defaultBlockSize = 32

// sequence is one sequence of a batch: its tokens and its scored positions.
type sequence struct {
	ids, pos []int32
	// labelIdx are the scored token indexes within the sequence, ascending; labels the ids
	// they predict; slots the example slot their log-prob is summed into.
	labelIdx      []int
	labels, slots []int32
}

// length is the part of the sequence that can change a log-prob: up to its last scored
// position.
func (s *sequence) length() int {
	if len(s.labelIdx) == 0 {
		return 0
	}
	return s.labelIdx[len(s.labelIdx)-1] + 1
}

// groupDims are the tensor sizes of a seqGroup: blocks of blockSize tokens, attention
// pairs, scored positions.
type groupDims struct {
	Blocks, Pairs, Labels int
}

func (d groupDims) max(o groupDims) groupDims {
	return groupDims{max(d.Blocks, o.Blocks), max(d.Pairs, o.Pairs), max(d.Labels, o.Labels)}
}

// fits reports whether every size of d is at least need's.
func (d groupDims) fits(need groupDims) bool {
	return d.Blocks >= need.Blocks && d.Pairs >= need.Pairs && d.Labels >= need.Labels
}

// rounded rounds every size up with roundShape.
func (d groupDims) rounded() groupDims {
	return groupDims{roundShape(d.Blocks), roundShape(d.Pairs), roundShape(d.Labels)}
}

// roundShape rounds n ≥ 0 up to a multiple of 2^(⌊log₂ n⌋−3): at most 12.5% more, and eight
// sizes per octave. On the CPU backend a new shape compiles in milliseconds, so sizes follow
// each batch closely; each distinct shape is still one cached graph.
func roundShape(n int) int {
	if n <= 16 {
		return max(n, 1)
	}
	step := 1 << (bits.Len(uint(n)) - 4)
	return (n + step - 1) / step * step
}

// needDims are the sizes the sequences need, unpadded.
func needDims(seqs []sequence, blockSize int) groupDims {
	var d groupDims
	for i := range seqs {
		nb := (seqs[i].length() + blockSize - 1) / blockSize
		d.Blocks += nb
		d.Pairs += nb * (nb + 1) / 2
		d.Labels += len(seqs[i].labelIdx)
	}
	return d
}

// seqGroup is one group of sequences in block layout: the inputs of ModelConfig.TokenLogProbs.
// Padding blocks hold token 0 at position 0 and belong to no pair (their attention output is
// zero); padding pairs join block 0 to itself with every score masked, which adds exactly
// nothing; padding labels score token 0 into slot −1, which no example sums.
type seqGroup struct {
	BlockSize int
	Dims      groupDims // padded sizes
	Need      groupDims // real sizes

	InputIDs, PositionIDs []int32 // [Blocks·BlockSize]
	// PairQuery and PairKey are block indexes [Pairs]; PairBias [Pairs·BlockSize·BlockSize]
	// is 0 where query i of the query block may see key j of the key block, maskedScore elsewhere.
	PairQuery, PairKey []int32
	PairBias           []float32
	// LabelPos [Labels] are token indexes into InputIDs, Labels the ids they predict, Slots the
	// example each log-prob is summed into (−1: none).
	LabelPos, Labels, Slots []int32
}

// newSeqGroup lays seqs out in blocks, padded to dims (which must fit needDims(seqs)).
func newSeqGroup(seqs []sequence, blockSize int, dims groupDims) seqGroup {
	bs := blockSize
	g := seqGroup{
		BlockSize: bs, Dims: dims, Need: needDims(seqs, bs),
		InputIDs: make([]int32, dims.Blocks*bs), PositionIDs: make([]int32, dims.Blocks*bs),
		PairQuery: make([]int32, dims.Pairs), PairKey: make([]int32, dims.Pairs),
		PairBias: make([]float32, dims.Pairs*bs*bs),
		LabelPos: make([]int32, 0, dims.Labels), Labels: make([]int32, 0, dims.Labels),
		Slots: make([]int32, 0, dims.Labels),
	}
	if !dims.fits(g.Need) {
		panic("newSeqGroup: dims do not fit the sequences") // a bug in the caller, not bad data
	}
	block, pair := 0, 0
	for i := range seqs {
		s := &seqs[i]
		n := s.length()
		if n == 0 {
			continue
		}
		start := block * bs
		copy(g.InputIDs[start:start+n], s.ids[:n])
		copy(g.PositionIDs[start:start+n], s.pos[:n])
		for j, idx := range s.labelIdx {
			g.LabelPos = append(g.LabelPos, int32(start+idx))
			g.Labels = append(g.Labels, s.labels[j])
			g.Slots = append(g.Slots, s.slots[j])
		}
		nb := (n + bs - 1) / bs
		for qb := range nb {
			for kb := 0; kb <= qb; kb++ {
				g.PairQuery[pair], g.PairKey[pair] = int32(block+qb), int32(block+kb)
				bias := g.PairBias[pair*bs*bs : (pair+1)*bs*bs]
				for qi := range bs {
					q := qb*bs + qi
					for kj := range bs {
						k := kb*bs + kj
						if q >= n || k > q {
							bias[qi*bs+kj] = maskedScore
						}
					}
				}
				pair++
			}
		}
		block += nb
	}
	// Padding pairs: block 0 with itself, every score masked.
	for i := pair * bs * bs; i < len(g.PairBias); i++ {
		g.PairBias[i] = maskedScore
	}
	for len(g.LabelPos) < dims.Labels {
		g.LabelPos = append(g.LabelPos, 0)
		g.Labels = append(g.Labels, 0)
		g.Slots = append(g.Slots, -1)
	}
	return g
}

// sequences splits a batch's sequences into targets and KL pairs, in row order. Every
// scored position of a sequence has the same kind (convert fills TargetSlot or KLSlot from
// the segment's segment_kl).
func (b *Batch) sequences(maxLen int) (targets, kls []sequence) {
	T := maxLen
	for r := range b.NumRows {
		// Sequence of each segment id of the row, in order of first appearance.
		index := map[int32]int{}
		var rowSeqs []sequence
		tokIdx := make([]int, T) // index of row token t within its sequence
		for t := range T {
			seg := b.SegmentIDs[r*T+t]
			if seg == 0 {
				continue
			}
			i, ok := index[seg]
			if !ok {
				i = len(rowSeqs)
				index[seg] = i
				rowSeqs = append(rowSeqs, sequence{})
			}
			s := &rowSeqs[i]
			tokIdx[t] = len(s.ids)
			s.ids = append(s.ids, b.InputIDs[r*T+t])
			s.pos = append(s.pos, b.PositionIDs[r*T+t])
		}
		kl := make([]bool, len(rowSeqs))
		for i := range b.NumLabels {
			p := int(b.LabelPos[i])
			if p/T != r {
				continue
			}
			si := index[b.SegmentIDs[p]]
			s := &rowSeqs[si]
			s.labelIdx = append(s.labelIdx, tokIdx[p%T])
			s.labels = append(s.labels, b.Labels[i])
			if b.KLSlot[i] >= 0 {
				kl[si] = true
				s.slots = append(s.slots, b.KLSlot[i])
			} else {
				s.slots = append(s.slots, b.TargetSlot[i])
			}
		}
		for i, s := range rowSeqs {
			switch {
			case s.length() == 0:
			case kl[i]:
				kls = append(kls, s)
			default:
				targets = append(targets, s)
			}
		}
	}
	return targets, kls
}

// batchLayout is a batch as the graphs take it.
type batchLayout struct {
	Target, KL seqGroup
}

// layoutDims are the padded sizes of both groups: the key of a compiled graph.
type layoutDims struct {
	Target, KL groupDims
}

// layoutNeed returns the batch's sequences and their unpadded sizes.
func (b *Batch) layoutNeed(maxLen, blockSize int) (targets, kls []sequence, need layoutDims) {
	targets, kls = b.sequences(maxLen)
	return targets, kls, layoutDims{needDims(targets, blockSize), needDims(kls, blockSize)}
}

// newBatchLayout lays the sequences out padded to dims.
func newBatchLayout(targets, kls []sequence, blockSize int, dims layoutDims) batchLayout {
	return batchLayout{
		Target: newSeqGroup(targets, blockSize, dims.Target),
		KL:     newSeqGroup(kls, blockSize, dims.KL),
	}
}
