package stablehash

import (
	"hash/fnv"
	"math/rand/v2"
	"testing"
)

// The reference sequence of splitmix64.c for seed 1234567 (Rosetta Code, "Pseudo-random
// numbers/Splitmix64", which takes it from the reference implementation).
func TestRNGReference(t *testing.T) {
	want := []uint64{6457827717110365317, 3203168211198807973, 9817491932198370423, 4593380528125082431, 16408922859458223821}
	r := NewRNG(1234567)
	for i, w := range want {
		if got := r.Uint64(); got != w {
			t.Fatalf("output %d: %d, want %d", i, got, w)
		}
	}
	if got := SplitMix(1234567); got != want[0] {
		t.Errorf("SplitMix(1234567) = %d, want %d", got, want[0])
	}
}

// FNV-1a as hash/fnv computes it, over random bytes of every length up to 200.
func TestFNVMatchesHashFNV(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 200 {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		h := fnv.New64a()
		h.Write(b)
		want := h.Sum64()
		if got := FNVBytes(FNVOffset, b); got != want {
			t.Fatalf("FNVBytes over %d bytes: %x, want %x", n, got, want)
		}
		if got := FNVString(FNVOffset, string(b)); got != want {
			t.Fatalf("FNVString over %d bytes: %x, want %x", n, got, want)
		}
		g := uint64(FNVOffset)
		for _, c := range b {
			g = FNVByte(g, c)
		}
		if g != want {
			t.Fatalf("FNVByte over %d bytes: %x, want %x", n, g, want)
		}
	}
}

// IntN is uniform and in range; Shuffle is a permutation.
func TestIntNShuffle(t *testing.T) {
	r := NewRNG(7)
	const n, draws = 6, 60000
	var count [n]int
	for range draws {
		x := r.IntN(n)
		if x < 0 || x >= n {
			t.Fatalf("IntN(%d) = %d", n, x)
		}
		count[x]++
	}
	for i, c := range count {
		if c < draws/n*9/10 || c > draws/n*11/10 {
			t.Errorf("IntN(%d): %d draws of %d in %d, want about %d", n, c, i, draws, draws/n)
		}
	}
	p := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	r.Shuffle(len(p), func(i, j int) { p[i], p[j] = p[j], p[i] })
	seen := map[int]bool{}
	for _, x := range p {
		seen[x] = true
	}
	if len(seen) != len(p) {
		t.Errorf("Shuffle lost elements: %v", p)
	}
}
