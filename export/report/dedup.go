package report

import (
	"math/bits"
	"strings"
	"unicode"

	"github.com/ktoloader/ktoloader/internal/stablehash"
)

// Near-duplicate detection: MinHash over character 5-grams of normalized text, with
// one-permutation hashing (each shingle hashed once, into one of sigLen buckets; Li, Owen
// and Zhang 2012) and rotation densification for empty buckets (Shrivastava and Li 2014),
// then LSH banding to find candidate pairs without comparing all of them. The estimated
// Jaccard similarity of two texts is the share of equal buckets.
const (
	shingleRunes = 5
	sigLen       = 64
	bands        = 16
	bandRows     = sigLen / bands
	// NearDupThreshold is the estimated Jaccard similarity of shingle sets from which two
	// prompts count as near-duplicates. At 0.8 the banding finds a pair with probability
	// 1−(1−0.8⁴)¹⁶ > 0.999.
	NearDupThreshold = 0.8
)

type signature [sigLen]uint32

// normalize lowercases text, turns every run of letters and digits that holds a digit into
// "0" (ids, timestamps, counts: what differs between otherwise equal generated prompts) and
// collapses whitespace, so that near-duplicates differ in few shingles.
func normalize(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	var word []rune
	digit := false
	flush := func() {
		if digit {
			b.WriteByte('0')
		} else {
			for _, r := range word {
				b.WriteRune(r)
			}
		}
		word, digit = word[:0], false
	}
	space := false
	for _, r := range s {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			if space && b.Len() > 0 {
				b.WriteByte(' ')
			}
			space = false
			word = append(word, unicode.ToLower(r))
			digit = digit || unicode.IsDigit(r)
			continue
		}
		flush()
		if unicode.IsSpace(r) {
			space = true
			continue
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteRune(r)
	}
	flush()
	return b.String()
}

// minhash computes the signature of normalized text.
func minhash(text string, sig *signature) {
	const empty = ^uint32(0)
	for i := range sig {
		sig[i] = empty
	}
	runes := []rune(text)
	n := len(runes) - shingleRunes + 1
	if n < 1 {
		n = 1 // a short text is one shingle: itself
	}
	for i := 0; i < n; i++ {
		end := min(i+shingleRunes, len(runes))
		var h uint64 = stablehash.FNVOffset // FNV-1a over the runes (a rune per step, not its bytes)
		for _, r := range runes[i:end] {
			h = (h ^ uint64(r)) * stablehash.FNVPrime
		}
		h = stablehash.Mix(h)
		bucket := h % sigLen
		if v := uint32(h >> 32); v < sig[bucket] {
			sig[bucket] = v
		}
	}
	// Densify: an empty bucket borrows the next bucket to its right (cyclically) that was
	// filled by a shingle, mixed with the distance so that borrowed values differ from the
	// originals. Reading from a copy keeps borrowed values from being borrowed again.
	orig := *sig
	for i := range sig {
		if orig[i] != empty {
			continue
		}
		for d := 1; d < sigLen; d++ {
			if v := orig[(i+d)%sigLen]; v != empty {
				sig[i] = uint32(stablehash.Mix(uint64(v)<<8 | uint64(d)))
				break
			}
		}
	}
}

// similarity is the share of equal buckets: an estimate of the Jaccard similarity.
func similarity(a, b *signature) float64 {
	eq := 0
	for i := range a {
		if a[i] == b[i] {
			eq++
		}
	}
	return float64(eq) / sigLen
}

// bandKey hashes band k of a signature, with k mixed in so that bands never collide.
func bandKey(sig *signature, k int) uint64 {
	h := uint64(k) + 1
	for _, v := range sig[k*bandRows : (k+1)*bandRows] {
		h = stablehash.Mix(h ^ uint64(v))
	}
	return h
}

// lshIndex holds the test rows' signatures for lookups by train rows.
type lshIndex struct {
	sigs  []signature
	ords  []int32 // the example ordinal of each signature
	norm  []uint64
	bands map[uint64][]int32 // band key → indexes into sigs
}

func newLSHIndex() *lshIndex { return &lshIndex{bands: map[uint64][]int32{}} }

func (x *lshIndex) add(ord int32, text string) {
	var sig signature
	minhash(text, &sig)
	i := int32(len(x.sigs))
	x.sigs = append(x.sigs, sig)
	x.ords = append(x.ords, ord)
	x.norm = append(x.norm, hashString(text))
	for k := 0; k < bands; k++ {
		key := bandKey(&sig, k)
		x.bands[key] = append(x.bands[key], i)
	}
}

// match is the most similar row of the other split found for an indexed row.
type match struct {
	ord       int32 // the other row's ordinal; -1 for none
	sim       float64
	identical bool // some row of the other split is equal after normalization
}

// query calls found for every indexed row whose signature is at least NearDupThreshold
// similar to text's.
func (x *lshIndex) query(text string, found func(i int32, sim float64, identical bool)) {
	if len(x.sigs) == 0 {
		return
	}
	var sig signature
	minhash(text, &sig)
	norm := hashString(text)
	var seen map[int32]bool
	for k := 0; k < bands; k++ {
		for _, i := range x.bands[bandKey(&sig, k)] {
			if seen[i] {
				continue
			}
			if seen == nil {
				seen = map[int32]bool{}
			}
			seen[i] = true
			if s := similarity(&sig, &x.sigs[i]); s >= NearDupThreshold {
				found(i, s, norm == x.norm[i])
			}
		}
	}
}

// hashString is FNV-1a 64, finalized: an equality key for texts. Collisions among n texts
// are about n²/2⁶⁵ likely; the report only counts equalities, never orders by hash.
func hashString(s string) uint64 {
	return stablehash.Mix(stablehash.FNVString(stablehash.FNVOffset, s))
}

// hashPair keys a (prompt, completion) pair; the prompt's length keeps "ab"+"c" and "a"+"bc"
// apart.
func hashPair(prompt, completion string) uint64 {
	h := stablehash.FNVString(stablehash.FNVString(stablehash.FNVOffset, prompt), completion)
	return stablehash.Mix(h ^ bits.RotateLeft64(uint64(len(prompt)), 17))
}
