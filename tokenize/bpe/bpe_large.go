package bpe

import "slices"

// mergeLarge is mergeHeap for chunks of megabytes (a tool result without a single space is
// one chunk): the same merges in the same order, in 6 to 8 bytes a symbol (ids, 16- or 32-bit ranks) instead of ~40
// (a linked list of 12-byte symbols plus 24-byte heap entries, grown by doubling). A 50 MB
// chunk cost gigabytes there.
//
// The symbols stay in ids, in place: a symbol merged into its left neighbour becomes -1.
// Every live symbol is one piece, at most MaxPieceBytes symbols wide, so the dead run between
// two live symbols is short and a neighbour is found by scanning. ranks[i] is the rank of the
// pair that starts at live symbol i (noMerge when it cannot merge), and a min-tree over blocks
// of ranks finds the pair of lowest rank, leftmost among equals: the heap's (rank, position)
// order. Ranks only change beside a merge, so each merge updates at most three blocks.

const (
	largeChunk = 1 << 16 // symbols; from here on a chunk is merged by mergeLarge
	rankBlock  = 64      // ranks per leaf of the min-tree
)

func (s *scratch) mergeLarge(m *model, dst []int32, ids []int32) []int32 {
	if m.maxRank < 1<<16-1 {
		return mergeLargeRanks(m, dst, ids, -1, make([]uint16, len(ids)), 1<<16-1)
	}
	return mergeLargeRanks(m, dst, ids, -1, make([]uint32, len(ids)), noMerge)
}

// bpeLarge16 encodes a chunk of more than s.large() bytes for a vocabulary below 65536
// pieces with 16-bit symbols (0xFFFF marks a merged-away one): 2 bytes a symbol instead of
// int32's 4, and 2 more for its rank. A huge chunk (a 50 MB tool result without a space)
// is what sets a row's peak memory. The symbols are not kept in the scratch.
func (s *scratch) bpeLarge16(m *model, dst []int32, chunk string, prefix bool) []int32 {
	ids := appendSymbols(m, make([]uint16, 0, len(chunk)+1), chunk, prefix)
	if len(ids) < s.large() { // multi-byte characters: fewer symbols than bytes
		wide := s.ids[:0]
		for _, id := range ids {
			wide = append(wide, int32(id))
		}
		s.ids = wide
		if len(wide) <= smallChunk {
			return append(dst, s.mergeSmall(m, wide)...)
		}
		return s.mergeHeap(m, dst, wide)
	}
	if m.maxRank < 1<<16-1 {
		return mergeLargeRanks(m, dst, ids, 1<<16-1, make([]uint16, len(ids)), 1<<16-1)
	}
	return mergeLargeRanks(m, dst, ids, 1<<16-1, make([]uint32, len(ids)), noMerge)
}

// mergeLargeRanks is mergeLarge with symbols of type S (dead marks a merged-away one) and
// ranks of type R (16 bits where the model allows: 2 bytes a symbol less); noMerge is R's
// largest value. ranks is not kept in the scratch: a chunk this size is rare, and the
// memory goes back to the heap with it.
func mergeLargeRanks[S int32 | uint16, R uint16 | uint32](m *model, dst []int32, ids []S, dead S, ranks []R, noMerge R) []int32 {
	n := len(ids)
	for i := 0; i < n; i++ {
		ranks[i] = noMerge
		if i+1 < n {
			if r, ok := m.pairs.get(int32(ids[i]), int32(ids[i+1])); ok {
				ranks[i] = R(r.rank)
			}
		}
	}
	blocks := (n + rankBlock - 1) / rankBlock
	size := 1
	for size < blocks {
		size *= 2
	}
	tree := make([]R, 2*size)
	for i := range tree {
		tree[i] = noMerge
	}
	blockMin := func(b int) R {
		lo, hi := b*rankBlock, min((b+1)*rankBlock, n)
		v := noMerge
		for _, r := range ranks[lo:hi] {
			v = min(v, r)
		}
		return v
	}
	for b := 0; b < blocks; b++ {
		tree[size+b] = blockMin(b)
	}
	for k := size - 1; k >= 1; k-- {
		tree[k] = min(tree[2*k], tree[2*k+1])
	}
	update := func(pos int) {
		b := pos / rankBlock
		k := size + b
		v := blockMin(b)
		if tree[k] == v {
			return
		}
		tree[k] = v
		for k /= 2; k >= 1; k /= 2 {
			v := min(tree[2*k], tree[2*k+1])
			if tree[k] == v {
				break
			}
			tree[k] = v
		}
	}
	next := func(i int) int {
		for i++; i < n && ids[i] == dead; i++ {
		}
		if i >= n {
			return -1
		}
		return i
	}
	prev := func(i int) int {
		for i--; i >= 0 && ids[i] == dead; i-- {
		}
		return i
	}
	rankAt := func(i int) R {
		if j := next(i); j >= 0 {
			if r, ok := m.pairs.get(int32(ids[i]), int32(ids[j])); ok {
				return R(r.rank)
			}
		}
		return noMerge
	}
	for tree[1] != noMerge {
		best := tree[1]
		k := 1
		for k < size {
			if tree[2*k] == best {
				k = 2 * k
			} else {
				k = 2*k + 1
			}
		}
		i := (k - size) * rankBlock
		for ranks[i] != best {
			i++
		}
		j := next(i)
		r, _ := m.pairs.get(int32(ids[i]), int32(ids[j]))
		ids[i], ids[j] = S(r.id), dead
		ranks[j] = noMerge
		ranks[i] = rankAt(i)
		update(j)
		update(i)
		if p := prev(i); p >= 0 {
			ranks[p] = rankAt(p)
			update(p)
		}
	}
	// Compact the survivors in place, then grow dst once to the exact size: appending one
	// by one would grow it by a quarter at a time, old and new arrays both live.
	ranks, tree = nil, nil
	w := 0
	for _, id := range ids {
		if id != dead {
			ids[w] = id
			w++
		}
	}
	dst = slices.Grow(dst, w)
	for _, id := range ids[:w] {
		dst = append(dst, int32(id))
	}
	return dst
}
