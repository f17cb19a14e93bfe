// Package testdata holds the project's own sample data and demo tokenizer, embedded so that
// `ktoloader prep` runs with no files at all (DESIGN.md "Commands"). Both are made by scripts
// in this repository, never copied from elsewhere:
//
//   - sample.jsonl: 196 synthetic rows in the shape of the Nexus KTO set, written by
//     scripts/gen_sample.py (fixed seed), which also writes broken.jsonl and its expected
//     verdicts broken.expect.tsv (read by the loader's tests from disk, not embedded).
//   - demo-tokenizer/tokenizer.model: a 4000-piece SentencePiece BPE model trained on the
//     sample by scripts/build_demo_tokenizer.sh, with Mistral v0.3's control tokens at
//     Mistral's ids 0..9 and byte fallback. Its other ids are not Mistral's: shards made with
//     it are for demos and tests only.
//
// The go tool skips directories named testdata in ./... patterns, so this package is only
// built where it is imported.
//
// It imports nothing of this module; any package may import it.
package testdata

import _ "embed"

// SampleJSONL is testdata/sample.jsonl.
//
//go:embed sample.jsonl
var SampleJSONL []byte

// SampleName names the embedded sample in row sources, rejects and the manifest.
const SampleName = "<embedded>/sample.jsonl"

// DemoTokenizerModel is testdata/demo-tokenizer/tokenizer.model.
//
//go:embed demo-tokenizer/tokenizer.model
var DemoTokenizerModel []byte

// DemoTokenizerName names the embedded demo tokenizer in logs and the manifest.
const DemoTokenizerName = "<embedded>/demo-tokenizer/tokenizer.model"
