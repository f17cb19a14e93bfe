package kto

import (
	"math/rand/v2"

	"github.com/ktoloader/ktoloader/loader"
	"github.com/ktoloader/ktoloader/tokenize"
)

// Tests use synthetic ids in the manner of torchtune's packing tests: no tokenizer, and every
// id tells where it came from. Prompt ids are BOS (1) then 1_000_000·(p+1) + k for prompt p;
// completion ids are 2_000_000_000 − 10_000·i − k for example i, so any token seen in a
// packed row names its example.
const (
	bos = 1
	eos = 2
)

func promptIDs(p, n int) []int32 {
	ids := make([]int32, n)
	if n > 0 {
		ids[0] = bos
	}
	for k := 1; k < n; k++ {
		ids[k] = int32(1_000_000*(p+1) + k)
	}
	return ids
}

func completionIDs(i, n int) []int32 {
	ids := make([]int32, n)
	for k := range ids {
		ids[k] = int32(2_000_000_000 - 10_000*i - k)
	}
	if n > 0 {
		ids[n-1] = eos
	}
	return ids
}

// synth is example i with prompt p (examples sharing p share a prompt) of the given lengths.
func synth(i, p, pLen, cLen int, label bool, behavior string) tokenize.Example {
	return tokenize.Example{
		PromptIDs:     promptIDs(p, pLen),
		CompletionIDs: completionIDs(i, cLen),
		Label:         label,
		Behavior:      behavior,
		Source:        loader.Source{File: "synthetic.jsonl", Line: int64(i + 1)},
	}
}

// synthSet is n examples, each with its own prompt, nD of them desirable (the first nD after
// a seeded shuffle), lengths uniform in [3, maxSeq]. Prompts hold at least BOS and one id of
// their own, so no two examples are equal.
func synthSet(r *rand.Rand, n, nD, maxSeq int) []tokenize.Example {
	labels := make([]bool, n)
	for i := 0; i < nD; i++ {
		labels[i] = true
	}
	r.Shuffle(n, func(i, j int) { labels[i], labels[j] = labels[j], labels[i] })
	exs := make([]tokenize.Example, n)
	for i := range exs {
		total := 3 + r.IntN(maxSeq-2)
		pLen := 2 + r.IntN(total-2)
		exs[i] = synth(i, i, pLen, total-pLen, labels[i], "b")
	}
	return exs
}

func concat(a, b []int32) []int32 {
	out := make([]int32, 0, len(a)+len(b))
	return append(append(out, a...), b...)
}
