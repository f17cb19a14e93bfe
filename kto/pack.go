package kto

import (
	"cmp"
	"fmt"
	"slices"
)

// Pack puts items of the given lengths into bins of capacity maxLen by best-fit-decreasing:
// items are taken longest first (ties by index) and each goes to the fullest bin it fits in,
// or to a new bin. It returns the bins as item indices, each bin's indices increasing, bins
// in the order they were opened. BFD uses at most 11/9·OPT + 6/9 bins on every input, OPT
// being the fewest possible (Johnson 1973 for the 11/9 ratio; the additive 6/9, proved tight
// for FFD by Dósa 2007, is what the tests check BFD against by brute force).
//
// Bins are found by remaining capacity in a segment tree over 0..maxLen, so packing n items
// costs O(n log n + n log maxLen).
//
// A length below 0 or above maxLen is an error (ErrTooLong for the latter); zero-length items
// are packed like any other.
func Pack(lengths []int, maxLen int) ([][]int, error) {
	if maxLen < 1 {
		return nil, &ConfigError{"MaxLen", "--max-len", maxLen, "must be at least 1"}
	}
	for i, l := range lengths {
		if l < 0 {
			return nil, fmt.Errorf("%w: item %d has negative length %d", ErrInvalidConfig, i, l)
		}
		if l > maxLen {
			return nil, fmt.Errorf("item %d: %w", i, &LengthError{Len: l, MaxLen: maxLen})
		}
	}
	return bfd(lengths, maxLen), nil
}

// bfd is Pack for lengths already checked to lie in [0, maxLen].
func bfd(lengths []int, maxLen int) [][]int {
	order := make([]int, len(lengths))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(lengths[b], lengths[a]) })

	var bins [][]int
	// free[c] holds the bins with c tokens of room left; tree counts them per c.
	free := make([][]int, maxLen+1)
	tree := newCapTree(maxLen + 1)
	for _, it := range order {
		l := lengths[it]
		c := tree.firstAtLeast(l)
		var b int
		if c < 0 {
			b = len(bins)
			bins = append(bins, nil)
			c = maxLen
		} else {
			stack := free[c]
			b = stack[len(stack)-1]
			free[c] = stack[:len(stack)-1]
			tree.add(c, -1)
		}
		bins[b] = append(bins[b], it)
		free[c-l] = append(free[c-l], b)
		tree.add(c-l, 1)
	}
	for _, bin := range bins {
		slices.Sort(bin)
	}
	return bins
}

// capTree counts bins per remaining capacity and finds the least capacity ≥ l in use.
type capTree struct {
	size int     // leaves, a power of two
	cnt  []int32 // cnt[1] is the root; leaves at size..2·size−1
}

func newCapTree(n int) *capTree {
	size := 1
	for size < n {
		size *= 2
	}
	return &capTree{size: size, cnt: make([]int32, 2*size)}
}

func (t *capTree) add(c int, delta int32) {
	for i := c + t.size; i >= 1; i /= 2 {
		t.cnt[i] += delta
	}
}

// firstAtLeast returns the least capacity ≥ l with a bin, or −1.
func (t *capTree) firstAtLeast(l int) int {
	return t.find(1, 0, t.size-1, l)
}

func (t *capTree) find(node, lo, hi, l int) int {
	if hi < l || t.cnt[node] == 0 {
		return -1
	}
	if lo == hi {
		return lo
	}
	mid := (lo + hi) / 2
	if r := t.find(2*node, lo, mid, l); r >= 0 {
		return r
	}
	return t.find(2*node+1, mid+1, hi, l)
}
