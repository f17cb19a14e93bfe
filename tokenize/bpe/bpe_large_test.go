package bpe

import (
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/ktoloader/ktoloader/internal/shared"
)

// TestMergeLargeEqualsHeap: mergeLarge (forced on every chunk over smallChunk symbols) gives
// exactly mergeHeap's ids, on real text and on random runs of the characters that merge most
// (ties of equal rank, long merge chains, byte fallback).
func TestMergeLargeEqualsHeap(t *testing.T) {
	tok, err := Load(shared.Path(t, "tokenizers", "mistral-7b-v0.3"))
	if err != nil {
		t.Fatal(err)
	}
	large := &Tokenizer{m: tok.m, pool: &sync.Pool{New: func() any { return &scratch{noCache: true, largeAt: smallChunk + 1} }}}
	heap := &Tokenizer{m: tok.m, pool: &sync.Pool{New: func() any { return &scratch{noCache: true, largeAt: 1 << 62} }}}
	var texts []string
	if data, err := os.ReadFile(shared.Path(t, "data", "nexus", "tools_sft_v1.5_11.29.25.jsonl")); err == nil {
		for i := 0; i+4096 < len(data) && len(texts) < 200; i += len(data) / 200 {
			texts = append(texts, strings.ToValidUTF8(string(data[i:i+4096]), "?"))
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabets := []string{"ab", "aaab", "ea ", "{}\":,", "the quick brown fox", "ééàüß漢字🙂\x01", "0123456789", "▁ \n\t"}
	for k := 0; k < 600; k++ {
		a := []rune(alphabets[k%len(alphabets)])
		n := 25 + rng.IntN(3000)
		var b strings.Builder
		for range n {
			b.WriteRune(a[rng.IntN(len(a))])
		}
		texts = append(texts, b.String())
	}
	texts = append(texts, strings.Repeat("a", 100000), strings.Repeat("ab", 40000)+"c")
	for i, text := range texts {
		for _, first := range []bool{false, true} {
			want := heap.AppendText(nil, text, first)
			got := large.AppendText(nil, text, first)
			if !slices.Equal(got, want) {
				t.Fatalf("text %d (first=%v, %d bytes, %.60q…): mergeLarge differs from mergeHeap", i, first, len(text), text)
			}
		}
	}
}
