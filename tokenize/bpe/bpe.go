package bpe

import (
	"strings"
	"unicode/utf8"
)

// The BPE below follows SentencePiece's bpe_model.cc (Model::Encode) and tokenizers'
// Word::merge_all: the text is split into characters (a character that is not a piece becomes
// its UTF-8 bytes, <0xNN>, at once), then the adjacent pair with the best merge rank is merged,
// repeatedly, the leftmost pair winning ties, until no adjacent pair can merge. Symbols form a
// linked list over an array and candidate pairs sit in a binary min-heap keyed by (rank,
// position), so a chunk of n characters costs O(n log n), never a rescan per merge. A heap
// entry remembers the two ids it was made from; when a neighbour merged meanwhile it no longer
// matches and is dropped on pop (lazy deletion).
//
// Text is cut into chunks at the start of every run of spaces ("▁" after another character).
// When no piece holds "▁" after another character (checked at load: model.splitAtSpace), no
// merge can cross such a cut, and since a chunk's merges never change another chunk's pairs the
// priority order inside each chunk is the same as in the whole text: encoding chunk by chunk
// gives exactly the same ids. The cut is not made inside a run of spaces: Mistral's "▁▁"…
// pieces make the last space of a run either join the run or start the next word ("▁the"),
// depending on what follows. Chunks are short and repeat a lot (words), so their ids are cached.

const (
	cacheMaxChunk = 64      // bytes; longer chunks are encoded every time
	cacheGenSize  = 1 << 15 // entries per cache generation
)

// symbol is one node of the list of symbols of the chunk being merged. A merged-away symbol
// has id -1.
type symbol struct {
	id         int32
	prev, next int32
}

// candidate is a mergeable adjacent pair: key orders the heap (rank in the high half, the left
// symbol's position in the low half, so equal ranks pop leftmost first).
type candidate struct {
	key         uint64
	left, right int32 // the ids the pair was made of
	result      int32
}

// scratch is the per-call working memory of an encoder, pooled so that concurrent encodes
// share nothing and the hot path does not allocate. Each scratch has its own bounded caches of
// chunk encodings (no locks; a pool entry tends to stay with one P).
type scratch struct {
	ids     []int32
	ranks   []uint32
	results []int32
	syms    []symbol
	heap    []candidate
	words   chunkCache // chunks without the dummy prefix
	firsts  chunkCache // first chunks with the dummy prefix
	noCache bool       // benchmarks of the bare BPE
	largeAt int        // tests: merge chunks of this many symbols and more with mergeLarge (0: largeChunk)
}

func newScratch() *scratch { return &scratch{} }

// large is the chunk size from which mergeLarge merges (tests lower it).
func (s *scratch) large() int {
	if s.largeAt > 0 {
		return s.largeAt
	}
	return largeChunk
}

// keepBytes bounds the working slices a pooled scratch keeps between calls: one huge chunk
// must not leave its megabytes of symbols parked in the pool, once per worker.
const keepBytes = 4 << 20

func (s *scratch) shrink() {
	if cap(s.ids)*4 > keepBytes {
		s.ids = nil
	}
	if cap(s.ranks)*4 > keepBytes {
		s.ranks = nil
	}
	if cap(s.results)*4 > keepBytes {
		s.results = nil
	}
	if cap(s.syms)*12 > keepBytes {
		s.syms = nil
	}
	if cap(s.heap)*24 > keepBytes {
		s.heap = nil
	}
}

// appendText appends the ids of text (spaces as "▁", with a leading "▁" when prefix).
func (s *scratch) appendText(m *model, dst []int32, text string, prefix bool) []int32 {
	if !m.splitAtSpace {
		return s.bpe(m, dst, text, prefix)
	}
	start := 0
	prevSpace := true // offset 0 is never a cut
	for i := 0; i < len(text); {
		c := text[i]
		w := 0
		if c == ' ' {
			w = 1
		} else if c == 0xE2 && i+2 < len(text) && text[i+1] == 0x96 && text[i+2] == 0x81 { // "▁"
			w = 3
		}
		if w == 0 {
			prevSpace = false
			i++
			continue
		}
		if !prevSpace {
			dst = s.cachedChunk(m, dst, text[start:i], prefix)
			prefix = false
			start = i
		}
		prevSpace = true
		i += w
	}
	return s.cachedChunk(m, dst, text[start:], prefix)
}

func (s *scratch) cachedChunk(m *model, dst []int32, chunk string, prefix bool) []int32 {
	if len(chunk) > cacheMaxChunk || s.noCache {
		return s.bpe(m, dst, chunk, prefix)
	}
	c := &s.words
	if prefix {
		c = &s.firsts
	}
	if ids, ok := c.get(chunk); ok {
		return append(dst, ids...)
	}
	n0 := len(dst)
	dst = s.bpe(m, dst, chunk, prefix)
	c.put(chunk, dst[n0:])
	return dst
}

// chunkCache maps chunks to their ids in two generations: new entries go to cur; when cur is
// full it becomes old and cur starts empty; a hit in old is copied to cur. Frequent words
// stay, one-off chunks age out, and memory stays bounded (2 × cacheGenSize entries).
type chunkCache struct {
	cur, old       map[string]span
	curIDs, oldIDs []int32
}

type span struct{ off, n uint32 }

func (c *chunkCache) get(chunk string) ([]int32, bool) {
	if sp, ok := c.cur[chunk]; ok {
		return c.curIDs[sp.off : sp.off+sp.n], true
	}
	if sp, ok := c.old[chunk]; ok {
		// put may recycle old's memory for cur: use the copy it returns.
		return c.put(chunk, c.oldIDs[sp.off:sp.off+sp.n]), true
	}
	return nil, false
}

// put stores ids for chunk and returns the stored copy.
func (c *chunkCache) put(chunk string, ids []int32) []int32 {
	if c.cur == nil {
		c.cur = make(map[string]span)
	}
	if len(c.cur) >= cacheGenSize {
		if c.old == nil {
			c.old = make(map[string]span)
		}
		c.cur, c.old = c.old, c.cur
		c.curIDs, c.oldIDs = c.oldIDs, c.curIDs
		clear(c.cur)
		c.curIDs = c.curIDs[:0]
	}
	off := len(c.curIDs)
	c.curIDs = append(c.curIDs, ids...) // may overlap ids when promoting: append copies safely
	c.cur[strings.Clone(chunk)] = span{off: uint32(off), n: uint32(len(ids))}
	return c.curIDs[off:]
}

// appendSymbols appends the chunk's initial symbols (before any merge): a piece per
// character, or its bytes' pieces. S is int32, or uint16 for a huge chunk of a vocabulary
// below 65536 pieces (half the memory).
func appendSymbols[S int32 | uint16](m *model, ids []S, chunk string, prefix bool) []S {
	if prefix {
		ids = append(ids, S(m.space))
	}
	for i := 0; i < len(chunk); {
		c := chunk[i]
		if c < utf8.RuneSelf {
			if id := m.ascii[c]; id >= 0 {
				ids = append(ids, S(id))
			} else {
				ids = append(ids, S(m.byteID[c]))
			}
			i++
			continue
		}
		r, w := utf8.DecodeRuneInString(chunk[i:])
		if id := m.charID(r); id >= 0 {
			ids = append(ids, S(id))
		} else {
			raw := chunk[i : i+w]
			if r == utf8.RuneError && w == 1 {
				raw = replacementUTF8
			}
			for j := 0; j < len(raw); j++ {
				ids = append(ids, S(m.byteID[raw[j]]))
			}
		}
		i += w
	}
	return ids
}

// replacementUTF8 stands for a byte that is not valid UTF-8: SentencePiece's normalizer turns
// it into U+FFFD (and Go's json decoding does the same), which then falls back to its bytes.
const replacementUTF8 = "\uFFFD"

// smallChunk: up to this many symbols the merge loop rescans a flat array for the best pair
// instead of keeping a heap; for word-sized chunks that is cheaper, with the same result.
const smallChunk = 24

// noMerge ranks a pair that cannot merge.
const noMerge = ^uint32(0)

// bpe appends the ids of one chunk.
func (s *scratch) bpe(m *model, dst []int32, chunk string, prefix bool) []int32 {
	need := len(chunk) + 1 // a byte is at most one symbol
	if need > s.large() && len(m.pieces) < 1<<16 {
		return s.bpeLarge16(m, dst, chunk, prefix)
	}
	ids := s.ids[:0]
	if cap(ids) < need && need > largeChunk {
		ids = make([]int32, 0, need) // no doubling of megabytes
	}
	ids = appendSymbols(m, ids, chunk, prefix)
	s.ids = ids
	switch {
	case len(ids) == 1:
		return append(dst, ids[0])
	case len(ids) <= smallChunk:
		return append(dst, s.mergeSmall(m, ids)...)
	case len(ids) >= s.large():
		return s.mergeLarge(m, dst, ids)
	}
	return s.mergeHeap(m, dst, ids)
}

// mergeSmall merges ids in place: ranks[i] is the rank of the pair (ids[i], ids[i+1]); each
// step merges the first pair of lowest rank and refreshes the two pairs beside it.
func (s *scratch) mergeSmall(m *model, ids []int32) []int32 {
	n := len(ids)
	ranks := s.ranks[:0]
	results := s.results[:0]
	for i := 0; i+1 < n; i++ {
		r, ok := m.pairs.get(ids[i], ids[i+1])
		if !ok {
			r.rank = -1
		}
		ranks = append(ranks, uint32(r.rank))
		results = append(results, r.id)
	}
	s.ranks, s.results = ranks, results
	for {
		best, bestRank := -1, noMerge
		for i, r := range ranks {
			if r < bestRank {
				best, bestRank = i, r
			}
		}
		if best < 0 {
			return ids
		}
		ids[best] = results[best]
		ids = append(ids[:best+1], ids[best+2:]...)
		ranks = append(ranks[:best], ranks[best+1:]...)
		results = append(results[:best], results[best+1:]...)
		if best > 0 {
			ranks[best-1], results[best-1] = s.pairRank(m, ids[best-1], ids[best])
		}
		if best < len(ranks) {
			ranks[best], results[best] = s.pairRank(m, ids[best], ids[best+1])
		}
	}
}

func (s *scratch) pairRank(m *model, left, right int32) (uint32, int32) {
	if r, ok := m.pairs.get(left, right); ok {
		return uint32(r.rank), r.id
	}
	return noMerge, 0
}

// mergeHeap merges ids with a linked list and a heap of candidate pairs and appends the
// result to dst.
func (s *scratch) mergeHeap(m *model, dst []int32, ids []int32) []int32 {
	n := int32(len(ids))
	syms := s.syms[:0]
	h := s.heap[:0]
	for i := int32(0); i < n; i++ {
		syms = append(syms, symbol{id: ids[i], prev: i - 1, next: i + 1})
		if i+1 < n {
			if r, ok := m.pairs.get(ids[i], ids[i+1]); ok {
				h = append(h, candidate{key: uint64(r.rank)<<32 | uint64(i), left: ids[i], right: ids[i+1], result: r.id})
			}
		}
	}
	syms[n-1].next = -1
	s.syms = syms
	heapify(h)

	for len(h) > 0 {
		c := h[0]
		h = heapPop(h)
		pos := int32(uint32(c.key))
		left := &syms[pos]
		if left.id != c.left || left.next < 0 {
			continue
		}
		right := &syms[left.next]
		if right.id != c.right {
			continue
		}
		left.id = c.result
		right.id = -1
		next := right.next
		left.next = next
		if next >= 0 {
			syms[next].prev = pos
			if r, ok := m.pairs.get(c.result, syms[next].id); ok {
				h = heapPush(h, candidate{key: uint64(r.rank)<<32 | uint64(pos), left: c.result, right: syms[next].id, result: r.id})
			}
		}
		if p := left.prev; p >= 0 {
			if r, ok := m.pairs.get(syms[p].id, c.result); ok {
				h = heapPush(h, candidate{key: uint64(r.rank)<<32 | uint64(p), left: syms[p].id, right: c.result, result: r.id})
			}
		}
	}
	s.heap = h

	for i := int32(0); i >= 0; i = syms[i].next {
		dst = append(dst, syms[i].id)
	}
	return dst
}

// A hand-rolled binary min-heap on candidate.key: container/heap's interface calls cost more
// than the comparisons here.

func heapify(h []candidate) {
	for i := len(h)/2 - 1; i >= 0; i-- {
		siftDown(h, i)
	}
}

func heapPush(h []candidate, c candidate) []candidate {
	h = append(h, c)
	i := len(h) - 1
	for i > 0 {
		p := (i - 1) / 2
		if h[p].key <= c.key {
			break
		}
		h[i] = h[p]
		i = p
	}
	h[i] = c
	return h
}

func heapPop(h []candidate) []candidate {
	last := len(h) - 1
	h[0] = h[last]
	h = h[:last]
	if last > 0 {
		siftDown(h, 0)
	}
	return h
}

func siftDown(h []candidate, i int) {
	n := len(h)
	c := h[i]
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		if r := l + 1; r < n && h[r].key < h[l].key {
			l = r
		}
		if c.key <= h[l].key {
			break
		}
		h[i] = h[l]
		i = l
	}
	h[i] = c
}
