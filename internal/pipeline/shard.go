package pipeline

import (
	"github.com/ktoloader/ktoloader/internal/stablehash"
	"github.com/ktoloader/ktoloader/kto"
	"github.com/ktoloader/ktoloader/tokenize"
)

// Sharded runs. A run with NumShards = N > 1 keeps the rows whose shard is ShardIndex and
// skips the others, so that N runs (an array job) together process the input once. A row's
// shard is a hash of its split group (kto.GroupKey: the request the row answers), so all
// the rows of one group land in the same run, and the split, which never puts a group on
// both sides, stays group-aware across runs. A row that has no group (the loader or the
// template rejected it) is placed by a hash of its raw bytes. The shard depends on nothing
// else: not on the file, the line, the order of the input, --seed or --workers.
//
// Skipped rows cost the line split, the JSON parse and the rendering, not the tokenizer:
// each of N runs reads the whole input, and tokenizes, packs and writes its 1/N.

// groupOf is kto.GroupKey of the example that a rendering becomes, computed without
// tokenizing: Encode takes Group and Prompt from the rendering alone (a test checks that
// the two agree on every sample row).
func groupOf(rd *tokenize.Rendering) uint64 {
	ex := tokenize.Example{Group: tokenize.GroupOf(rd.Messages)}
	if ex.Group == 0 {
		ex.Prompt = tokenize.Spell(rd.Prompt)
	}
	return kto.GroupKey(&ex)
}

// rawHash places a row without a prompt. The salt keeps it apart from prompt hashes.
func rawHash(raw []byte) uint64 { return stablehash.FNVBytes(stablehash.FNVOffset^0x5a17, raw) }

// shardOf maps a hash to one of n shards. The SplitMix64 finalizer scatters the hash first,
// so that the low bits FNV leaves correlated do not skew the modulo.
func shardOf(h uint64, n int) int { return int(stablehash.SplitMix(h) % uint64(n)) }
