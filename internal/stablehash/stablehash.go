// Package stablehash is the module's one copy of the hashes and the random stream that
// outputs depend on: FNV-1a 64 and SplitMix64 (Steele, Lea and Flood, "Fast splittable
// pseudorandom number generators", OOPSLA 2014). They are written out rather than taken from
// hash/fnv or math/rand because the split, the batch order, the shard of a row, the report's
// near-duplicate signatures and the synthetic rows must be byte-identical for a given seed on
// every Go release, and math/rand/v2 does not promise that its algorithms stay; and so that
// the hot loops (a hash per token id, per raw row) inline without an interface call.
//
// It imports only the standard library; any package of the module may import it.
package stablehash

// FNV-1a 64's offset basis and prime.
const (
	FNVOffset = 14695981039346656037
	FNVPrime  = 1099511628211
)

// Gamma is SplitMix64's increment, the odd integer nearest 2^64/φ.
const Gamma = 0x9e3779b97f4a7c15

// FNVByte is one FNV-1a 64 step.
func FNVByte(h uint64, b byte) uint64 { return (h ^ uint64(b)) * FNVPrime }

// FNVBytes continues the FNV-1a 64 hash h over b (start from FNVOffset).
func FNVBytes(h uint64, b []byte) uint64 {
	for _, c := range b {
		h = (h ^ uint64(c)) * FNVPrime
	}
	return h
}

// FNVString continues the FNV-1a 64 hash h over s.
func FNVString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * FNVPrime
	}
	return h
}

// Mix is SplitMix64's finalizer (Stafford's Mix13): a bijection on uint64 that carries
// every input bit to every output bit, so hashes whose low bits are correlated (FNV's) can
// be reduced modulo n or cut to their top bits.
func Mix(z uint64) uint64 {
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// SplitMix is one SplitMix64 output for state z: Mix(z + Gamma).
func SplitMix(z uint64) uint64 { return Mix(z + Gamma) }

// RNG is SplitMix64 as a generator: its outputs for state s are SplitMix(s), SplitMix(s +
// Gamma), … (the reference splitmix64.c's next()).
type RNG struct{ s uint64 }

// NewRNG returns the generator with state s.
func NewRNG(s uint64) RNG { return RNG{s: s} }

// Uint64 returns the next output.
func (r *RNG) Uint64() uint64 {
	r.s += Gamma
	return Mix(r.s)
}

// IntN is uniform in [0, n) for n > 0: draws below 2^64 mod n are rejected so that the
// modulo carries no bias.
func (r *RNG) IntN(n int) int {
	bound := uint64(n)
	threshold := -bound % bound
	for {
		if x := r.Uint64(); x >= threshold {
			return int(x % bound)
		}
	}
}

// Shuffle is Fisher–Yates over n items with IntN.
func (r *RNG) Shuffle(n int, swap func(i, j int)) {
	for i := n - 1; i > 0; i-- {
		swap(i, r.IntN(i+1))
	}
}
