package tokenize

import (
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/ktoloader/ktoloader/internal/shared"
	"github.com/ktoloader/ktoloader/loader"
)

// TestMergeLargeEqualsHeap: mergeLarge (forced on every chunk over smallChunk symbols) gives
// exactly mergeHeap's ids, on real text and on random runs of the characters that merge most
// (ties of equal rank, long merge chains, byte fallback).
func TestMergeLargeEqualsHeap(t *testing.T) {
	tok := realTokenizer(t)
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

// TestGroupOfStreams: GroupOf hashes exactly the text strings.Join(strings.Fields(
// strings.ToLower(s)), " ") of each field, as it did before it stopped building it.
func TestGroupOfStreams(t *testing.T) {
	ref := func(msgs []loader.Message) uint64 {
		h := uint64(14695981039346656037)
		add := func(s string) {
			for _, b := range []byte(strings.Join(strings.Fields(strings.ToLower(s)), " ")) {
				h = (h ^ uint64(b)) * 1099511628211
			}
			h = (h ^ 0xff) * 1099511628211
		}
		for i := 0; i < len(msgs)-1; i++ {
			m := &msgs[i]
			if m.Role == "system" {
				continue
			}
			add(m.Role)
			add(m.Text())
			for _, tc := range m.ToolCalls {
				add(tc.Name)
				add(string(tc.Arguments))
			}
		}
		if h == 0 {
			h = 1
		}
		return h
	}
	rng := rand.New(rand.NewPCG(3, 4))
	alphabet := []rune("aB Z\t\n\u00a0\u2003ÉßİΣ漢\u0085x\x00\u1680🙂")
	str := func() string {
		var b strings.Builder
		for range rng.IntN(30) {
			b.WriteRune(alphabet[rng.IntN(len(alphabet))])
		}
		if rng.IntN(10) == 0 {
			b.WriteString("\xff") // invalid UTF-8: ToLower writes U+FFFD
		}
		return b.String()
	}
	for k := 0; k < 3000; k++ {
		u, a, tr := str(), str(), str()
		msgs := []loader.Message{
			{Role: "user", Content: &u},
			{Role: "assistant", ToolCalls: []loader.ToolCall{{ID: "abcDEF123", Name: str(), Arguments: []byte(`{"x": "` + str() + `"}`)}}},
			{Role: "tool", Content: &tr, ToolCallID: "abcDEF123"},
			{Role: "assistant", Content: &a},
		}
		if got, want := GroupOf(msgs), ref(msgs); got != want {
			t.Fatalf("case %d: GroupOf %x, reference %x (%q %q)", k, got, want, u, tr)
		}
	}
}
