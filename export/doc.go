// Package export writes what ktoloader produces and reads it back: Parquet and Arrow IPC
// shards of the row types in package kto under Hugging Face's split naming
// (OUT/kto/train-00000-of-00002.parquet), written to temporary names and renamed only when
// complete; manifest.json, written last, which makes a directory a finished run; the
// preparation of an output directory for a (re)run; readers that never panic on a damaged
// file; and Verify, which re-reads a finished directory and checks every file against the
// manifest and the invariants trainers rely on.
//
// Files are byte-identical for identical rows and options: Parquet's created_by is fixed
// ("ktoloader"), no key-value metadata or timestamps are written, and shard boundaries depend
// only on the row sequence.
//
// An .arrow shard is the Arrow IPC file format (random access, a footer; what
// pyarrow.ipc.open_file and pyarrow.feather read), not the stream format, with the schema
// that arrow's own Parquet reader gives for the .parquet twin: non-nullable columns, lists
// of non-nullable "element". Its buffers are not compressed, so it can be memory-mapped.
//
// It may import kto (the row types), tokenize and loader; never kto/train, export/report or
// internal/pipeline, which import it.
package export
