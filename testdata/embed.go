// Package testdata embeds the project's own sample data set and demo tokenizer, so the CLI's
// demo run needs no file on disk.
package testdata

import _ "embed"

// SampleName is how the embedded sample is named in sources, rejects and the manifest.
const SampleName = "<embedded>/sample.jsonl"

// SampleJSONL is testdata/sample.jsonl.
//
//go:embed sample.jsonl
var SampleJSONL []byte
