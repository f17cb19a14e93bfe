package kto

// Hashing and randomness are written out here rather than taken from math/rand: the
// output files must be byte-identical for a given seed on every Go release, and math/rand/v2
// does not promise that its Shuffle and IntN keep their algorithms.

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

// hashIDs is FNV-1a 64 over the ids' little-endian bytes.
func hashIDs(h uint64, ids []int32) uint64 {
	for _, id := range ids {
		u := uint32(id)
		for k := 0; k < 4; k++ {
			h ^= uint64(byte(u >> (8 * k)))
			h *= fnvPrime
		}
	}
	return h
}

// hashString is FNV-1a 64 over s.
func hashString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

// splitmix64 is the finalizer of Steele, Lea and Flood's SplitMix64: a bijection on uint64
// that scatters nearby inputs, used to turn (seed, hash) into a sort key.
func splitmix64(z uint64) uint64 {
	z += 0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// Salts keep the split order, the example order and the batch shuffle independent for one seed.
const (
	saltSplit   = 0x5b1d
	saltExample = 0xe4a3
	saltBatch   = 0xba7c
)

// seededKey orders items by a seed-dependent pseudo-random key that does not depend on where
// an item sits in the input.
func seededKey(seed int64, salt, h uint64) uint64 {
	return splitmix64(h ^ splitmix64(uint64(seed)^salt))
}

// rng is SplitMix64 as a generator.
type rng struct{ s uint64 }

func newRNG(seed int64, salt uint64) *rng { return &rng{s: uint64(seed) ^ salt*0x9e3779b97f4a7c15} }

func (r *rng) next() uint64 {
	r.s += 0x9e3779b97f4a7c15
	z := r.s
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// intn is uniform in [0, n) for n > 0: draws below 2^64 mod n are rejected so that the
// modulo carries no bias.
func (r *rng) intn(n int) int {
	bound := uint64(n)
	threshold := -bound % bound
	for {
		if x := r.next(); x >= threshold {
			return int(x % bound)
		}
	}
}

// shuffle is Fisher–Yates.
func (r *rng) shuffle(n int, swap func(i, j int)) {
	for i := n - 1; i > 0; i-- {
		swap(i, r.intn(i+1))
	}
}
