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
// Targets and KL pairs go in two groups. The loss takes the KL pairs' log-probs without
// gradient (TRL computes them under no_grad), so that group is only run forward and the
// backward pass covers half the tokens. And a KL pair is its example's prompt followed by
// another example's completion: the tokens it shares with its example's target (the prompt,
// unless truncation cut the two differently) have the same hidden states there, so the KL
// group holds only the rest of each KL sequence, whose queries also attend to the target's
// blocks of the shared prefix. On the demo data that leaves 40% of the KL tokens.
//
// Only scored positions matter, and a position sees nothing after it: a sequence's tokens
// after its last scored position are left out, and a sequence with no scored position
// (nothing of its completion left) is dropped. None of this changes a log-prob.

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
	example       int32 // the batch example (slot) of the sequence
	// For a KL pair: its first prefix tokens are those of targets[target] (−1: none).
	target, prefix int
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

// needDims are the sizes the sequences need, unpadded: the target group's, or the KL
// group's when the sequences share prefixes with targets.
func needDims(seqs []sequence, blockSize int) groupDims {
	var d groupDims
	for i := range seqs {
		s := &seqs[i]
		nb := (s.length() - s.prefix + blockSize - 1) / blockSize
		prefixBlocks := (s.prefix + blockSize - 1) / blockSize
		d.Blocks += nb
		d.Pairs += nb*prefixBlocks + nb*(nb+1)/2
		d.Labels += len(s.labelIdx)
	}
	return d
}

// seqGroup is one group of sequences in block layout: the inputs of ModelConfig.TokenLogProbs.
// Padding blocks hold token 0 at position 0 and belong to no pair (their attention output is
// zero); padding pairs join block 0 to block 0 with every score masked, which adds exactly
// nothing; padding labels score token 0 into slot −1, which no example sums.
type seqGroup struct {
	BlockSize int
	Dims      groupDims // padded sizes
	Need      groupDims // real sizes

	InputIDs, PositionIDs []int32 // [Blocks·BlockSize]
	// PairQuery are the group's block indexes [Pairs], PairKey key block indexes; PairBias
	// [Pairs·BlockSize·BlockSize] is 0 where query i of the query block may see key j of the
	// key block, maskedScore elsewhere.
	PairQuery, PairKey []int32
	PairBias           []float32
	// LabelPos [Labels] are token indexes, Labels the ids they predict, Slots the example each
	// log-prob is summed into (−1: none).
	LabelPos, Labels, Slots []int32
	// In the KL group, PairKey and LabelPos index the target group's blocks and tokens
	// followed by the group's own (see newBatchLayout).
}

// newSeqGroup lays seqs out in blocks, padded to dims (which must fit needDims(seqs)).
// Sequences with a prefix take it from targets (laid out as tgt), whose blocks and tokens
// come first in key and label indexes. It returns the first block of each sequence.
func newSeqGroup(seqs []sequence, blockSize int, dims groupDims, targets *seqGroup, targetStart []int) (seqGroup, []int) {
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
	keyBase, tokenBase := 0, 0 // where the group's own blocks and tokens start in key/label indexes
	if targets != nil {
		keyBase, tokenBase = targets.Dims.Blocks, targets.Dims.Blocks*bs
	}
	starts := make([]int, len(seqs))
	block, pair := 0, 0
	// addPair appends the pair (query block q of the group, key block k of the key index) with
	// the scores allowed by visible(query i, key j).
	addPair := func(q, k int, visible func(qi, kj int) bool) {
		g.PairQuery[pair], g.PairKey[pair] = int32(q), int32(k)
		bias := g.PairBias[pair*bs*bs : (pair+1)*bs*bs]
		for qi := range bs {
			for kj := range bs {
				if !visible(qi, kj) {
					bias[qi*bs+kj] = maskedScore
				}
			}
		}
		pair++
	}
	for i := range seqs {
		s := &seqs[i]
		starts[i] = block
		c, n := s.prefix, s.length()-s.prefix // shared prefix, own tokens
		for j, idx := range s.labelIdx {
			if idx < c {
				g.LabelPos = append(g.LabelPos, int32(targetStart[s.target]*bs+idx))
			} else {
				g.LabelPos = append(g.LabelPos, int32(tokenBase+block*bs+idx-c))
			}
			g.Labels = append(g.Labels, s.labels[j])
			g.Slots = append(g.Slots, s.slots[j])
		}
		if n <= 0 {
			continue
		}
		copy(g.InputIDs[block*bs:], s.ids[c:c+n])
		copy(g.PositionIDs[block*bs:], s.pos[c:c+n])
		nb := (n + bs - 1) / bs
		for qb := range nb {
			// Own queries at qb·bs+qi < n see the whole shared prefix...
			for pb := range (c + bs - 1) / bs {
				addPair(block+qb, targetStart[s.target]+pb, func(qi, kj int) bool {
					return qb*bs+qi < n && pb*bs+kj < c
				})
			}
			// ...and their own earlier tokens.
			for kb := 0; kb <= qb; kb++ {
				addPair(block+qb, keyBase+block+kb, func(qi, kj int) bool {
					q, k := qb*bs+qi, kb*bs+kj
					return q < n && k <= q
				})
			}
		}
		block += nb
	}
	// Padding pairs: block 0 with block 0, every score masked.
	for i := pair * bs * bs; i < len(g.PairBias); i++ {
		g.PairBias[i] = maskedScore
	}
	for len(g.LabelPos) < dims.Labels {
		g.LabelPos = append(g.LabelPos, 0)
		g.Labels = append(g.Labels, 0)
		g.Slots = append(g.Slots, -1)
	}
	return g, starts
}

// sequences splits a batch's sequences into targets and KL pairs, in row order, and finds
// the prefix each KL pair shares with its example's target. Every scored position of a
// sequence has the same kind (convert fills TargetSlot or KLSlot from segment_kl).
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
			s.target = -1
			if len(s.slots) > 0 {
				s.example = s.slots[0]
			}
			switch {
			case s.length() == 0:
			case kl[i]:
				kls = append(kls, s)
			default:
				targets = append(targets, s)
			}
		}
	}
	sharePrefixes(targets, kls)
	return targets, kls
}

// sharePrefixes finds, for each KL pair, the longest common prefix (ids and positions) with
// its example's target, up to the target's length (tokens past it are not laid out).
func sharePrefixes(targets, kls []sequence) {
	target := map[int32]int{}
	for i := range targets {
		target[targets[i].example] = i
	}
	for i := range kls {
		k := &kls[i]
		k.target, k.prefix = -1, 0
		t, ok := target[k.example]
		if !ok {
			continue
		}
		tg := &targets[t]
		n := min(k.length(), tg.length())
		c := 0
		for c < n && k.ids[c] == tg.ids[c] && k.pos[c] == tg.pos[c] {
			c++
		}
		if c > 0 {
			k.target, k.prefix = t, c
		}
	}
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

// newBatchLayout lays the sequences out padded to dims: the KL group's key blocks and
// label tokens index the target group's followed by its own.
func newBatchLayout(targets, kls []sequence, blockSize int, dims layoutDims) batchLayout {
	var l batchLayout
	var starts []int
	l.Target, starts = newSeqGroup(targets, blockSize, dims.Target, nil, nil)
	l.KL, _ = newSeqGroup(kls, blockSize, dims.KL, &l.Target, starts)
	return l
}
