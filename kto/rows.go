// Package kto builds what KTO and SFT train on from tokenized examples: the group-aware,
// stratified train/test split, interleaved KTO batches with TRL's mismatched KL pairs, and
// best-fit-decreasing packing into fixed-length rows whose sequences never see each other.
// It knows nothing of file formats: the row structs below carry parquet tags so that export
// can write them and kto/train can read them, but no I/O happens here.
//
// The pipeline, per example and then per split:
//
//	Truncate(ex)                      every example: fit MaxLen, or a too_long reject
//	Split(exs) → train, test          whole prompts to one side, stratified by behavior×label
//	Batches(split) → []KTORow         kto/: interleaved batches, KL pairs as TRL makes them
//	PackKTO / PackBatch → []PackedRow kto_packed/: each batch packed alone
//	PackSFT / SFTPacker → []SFTRow    sft/: desirable examples, windowed best-fit-decreasing
//	UnpackKTO, UnpackSFT              back to sequences, checking every row invariant (verify)
//
// Memory: the split and the batch order need a global view, but only of a Key per example
// (group hash, content hash, label, behavior: about 40 bytes plus the behavior string);
// PlanSplit and PlanBatches work on Keys alone and return indices, so a caller can keep ids
// out of memory and fetch examples by index when writing. Split and Batches are the
// convenience forms over a slice of examples. PackBatch needs one batch at a time and
// SFTPacker one window (Config.SFTWindow sequences).
//
// Everything is deterministic for a given input order, Config and Seed, and the split and
// the batch composition do not depend on the input order at all (only on content and Seed).
// Seeded orders use this package's own SplitMix64, so outputs do not change with Go releases.
//
// It may import tokenize and loader; export, the trainer and the pipeline import it.
package kto

// KTORow is one row of kto/: one example in final training order. Consecutive
// Config.BatchSize rows form one batch.
type KTORow struct {
	PromptIDs       []int32 `parquet:"prompt_ids,list"`
	CompletionIDs   []int32 `parquet:"completion_ids,list"`
	KLCompletionIDs []int32 `parquet:"KL_completion_ids,list"`
	Label           bool    `parquet:"label"`
	Behavior        string  `parquet:"behavior"`
	Prompt          string  `parquet:"prompt"`
	Completion      string  `parquet:"completion"`
	Source          string  `parquet:"source"`
	BatchIndex      int64   `parquet:"batch_index"`
}

// PackedRow is one row of kto_packed/: MaxLen tokens holding sequences of one batch only.
// Segment s (1-based) of the row is described by SegmentLabel[s-1], SegmentKL[s-1] and
// SegmentSource[s-1]; segment 0 is padding.
type PackedRow struct {
	InputIDs      []int32  `parquet:"input_ids,list"`
	SegmentIDs    []int32  `parquet:"segment_ids,list"`
	PositionIDs   []int32  `parquet:"position_ids,list"`
	LossMask      []int32  `parquet:"loss_mask,list"`
	SegmentLabel  []int32  `parquet:"segment_label,list"`
	SegmentKL     []bool   `parquet:"segment_kl,list"`
	SegmentSource []string `parquet:"segment_source,list"`
	// SegmentExample is the example's index within its batch (0..BatchSize-1), so a target
	// and its KL pair can be matched and reference log-probs keyed.
	SegmentExample []int32 `parquet:"segment_example,list"`
	BatchIndex     int64   `parquet:"batch_index"`
}

// SFTRow is one row of sft/: desirable examples packed best-fit-decreasing. Labels is aligned
// with InputIDs (unshifted) and is -100 where no loss is taken; SeqLengths sums to the
// unpadded length.
type SFTRow struct {
	InputIDs    []int32 `parquet:"input_ids,list"`
	Labels      []int32 `parquet:"labels,list"`
	PositionIDs []int32 `parquet:"position_ids,list"`
	SeqLengths  []int32 `parquet:"seq_lengths,list"`
}
