package kto

import "github.com/ktoloader/ktoloader/internal/stablehash"

// Hashing and randomness come from internal/stablehash rather than math/rand: the output
// files must be byte-identical for a given seed on every Go release, and math/rand/v2 does
// not promise that its Shuffle and IntN keep their algorithms.

const fnvOffset = stablehash.FNVOffset

// hashIDs is FNV-1a 64 over the ids' little-endian bytes.
func hashIDs(h uint64, ids []int32) uint64 {
	for _, id := range ids {
		u := uint32(id)
		h = stablehash.FNVByte(h, byte(u))
		h = stablehash.FNVByte(h, byte(u>>8))
		h = stablehash.FNVByte(h, byte(u>>16))
		h = stablehash.FNVByte(h, byte(u>>24))
	}
	return h
}

// hashString is FNV-1a 64 over s.
func hashString(h uint64, s string) uint64 { return stablehash.FNVString(h, s) }

// Salts keep the split order, the example order and the batch shuffle independent for one seed.
const (
	saltSplit   = 0x5b1d
	saltExample = 0xe4a3
	saltBatch   = 0xba7c
)

// seededKey orders items by a seed-dependent pseudo-random key that does not depend on where
// an item sits in the input: SplitMix64 of the hash and of (seed, salt), which scatters
// nearby inputs.
func seededKey(seed int64, salt, h uint64) uint64 {
	return stablehash.SplitMix(h ^ stablehash.SplitMix(uint64(seed)^salt))
}

// newRNG is SplitMix64 seeded by (seed, salt).
func newRNG(seed int64, salt uint64) *stablehash.RNG {
	r := stablehash.NewRNG(uint64(seed) ^ salt*stablehash.Gamma)
	return &r
}
