package kto

import (
	"fmt"
)

// PackCounts count one packed kind's rows: what PackStats reports, and what the manifest
// records per split (export.PackInfo is this type, so the JSON names and the field order here
// are the manifest's).
type PackCounts struct {
	Rows      int64   `json:"rows"`
	Sequences int64   `json:"sequences"`
	Tokens    int64   `json:"tokens"`     // real (non-padding) tokens
	Fill      float64 `json:"fill_ratio"` // Tokens / (Rows × MaxLen)
}

// PackStats reports packing: Fill is real tokens over row capacity.
type PackStats struct {
	MaxLen int `json:"max_len"`
	PackCounts
}

// Add accumulates o into s.
func (s *PackStats) Add(o PackStats) {
	if s.MaxLen == 0 {
		s.MaxLen = o.MaxLen
	}
	s.Rows += o.Rows
	s.Sequences += o.Sequences
	s.Tokens += o.Tokens
	s.fill()
}

func (s *PackStats) fill() {
	s.Fill = 0
	if s.Rows > 0 && s.MaxLen > 0 {
		s.Fill = float64(s.Tokens) / (float64(s.Rows) * float64(s.MaxLen))
	}
}

// PackKTO packs every batch of rows (runs of equal BatchIndex, as Batches returns them)
// with PackBatch and returns the rows in batch order.
func PackKTO(rows []KTORow, cfg Config) ([]PackedRow, PackStats, error) {
	var out []PackedRow
	var stats PackStats
	for start := 0; start < len(rows); {
		end := start + 1
		for end < len(rows) && rows[end].BatchIndex == rows[start].BatchIndex {
			end++
		}
		packed, st, err := PackBatch(rows[start:end], cfg)
		if err != nil {
			return nil, stats, err
		}
		out = append(out, packed...)
		stats.Add(st)
		start = end
	}
	return out, stats, nil
}

// PackBatch packs one KTO batch into rows of MaxLen tokens for the GomlX trainer. Each
// example j gives two sequences: its target, prompt_j + completion_j, and its KL pair,
// prompt_j + KL_completion_j; the 2·len(batch) sequences are placed by Pack
// (best-fit-decreasing) into as few rows as it finds, and rows never mix batches. A row of
// MaxLen = 16 holding two sequences (P prompt, C completion, K KL completion, _ padding):
//
//	input_ids      P P P C C P P P K K K _ _ _ _ _
//	segment_ids    1 1 1 1 1 2 2 2 2 2 2 0 0 0 0 0
//	position_ids   0 1 2 3 4 0 1 2 3 4 5 0 0 0 0 0
//	loss_mask      0 0 0 1 1 0 0 0 1 1 1 0 0 0 0 0
//	segment_kl     [false, true]   segment_label [1, 1]   segment_example [0, 0]
//
// Segments appear in row in order of their sequence (example j's target before its KL pair,
// j increasing) and padding (PadID, segment 0, position 0, loss 0) fills the end. Every
// sequence must fit in MaxLen: Truncate and Batches see to it.
func PackBatch(batch []KTORow, cfg Config) ([]PackedRow, PackStats, error) {
	cfg, err := cfg.WithDefaults()
	if err != nil {
		return nil, PackStats{}, err
	}
	stats := PackStats{MaxLen: cfg.MaxLen}
	if len(batch) == 0 {
		return nil, stats, nil
	}
	bi := batch[0].BatchIndex
	lengths := make([]int, 0, 2*len(batch))
	for j := range batch {
		r := &batch[j]
		if r.BatchIndex != bi {
			return nil, stats, fmt.Errorf("%w: %d and %d", ErrMixedBatch, bi, r.BatchIndex)
		}
		lengths = append(lengths, len(r.PromptIDs)+len(r.CompletionIDs), len(r.PromptIDs)+len(r.KLCompletionIDs))
	}
	bins, err := Pack(lengths, cfg.MaxLen)
	if err != nil {
		return nil, stats, fmt.Errorf("batch %d: %w", bi, err)
	}
	out := make([]PackedRow, len(bins))
	for b, bin := range bins {
		row := newPackedRow(cfg.MaxLen, cfg.PadID, len(bin))
		row.BatchIndex = bi
		pos := 0
		for s, item := range bin {
			r := &batch[item/2]
			kl := item%2 == 1
			completion := r.CompletionIDs
			if kl {
				completion = r.KLCompletionIDs
			}
			seg := int32(s + 1)
			np, n := len(r.PromptIDs), len(r.PromptIDs)+len(completion)
			copy(row.InputIDs[pos:], r.PromptIDs)
			copy(row.InputIDs[pos+np:], completion)
			positions(row.PositionIDs[pos : pos+n])
			for i := pos; i < pos+n; i++ {
				row.SegmentIDs[i] = seg
			}
			for i := pos + np; i < pos+n; i++ {
				row.LossMask[i] = 1
			}
			pos += n
			label := int32(0)
			if r.Label {
				label = 1
			}
			row.SegmentLabel = append(row.SegmentLabel, label)
			row.SegmentKL = append(row.SegmentKL, kl)
			row.SegmentSource = append(row.SegmentSource, r.Source)
			row.SegmentExample = append(row.SegmentExample, int32(item/2))
		}
		stats.Tokens += int64(pos)
		out[b] = row
	}
	stats.Rows = int64(len(out))
	stats.Sequences = int64(len(lengths))
	stats.fill()
	return out, stats, nil
}

func newPackedRow(maxLen int, pad int32, segments int) PackedRow {
	ids := make([]int32, 4*maxLen) // one allocation for the four columns
	row := PackedRow{
		InputIDs:       ids[0*maxLen : 1*maxLen : 1*maxLen],
		SegmentIDs:     ids[1*maxLen : 2*maxLen : 2*maxLen],
		PositionIDs:    ids[2*maxLen : 3*maxLen : 3*maxLen],
		LossMask:       ids[3*maxLen : 4*maxLen : 4*maxLen],
		SegmentLabel:   make([]int32, 0, segments),
		SegmentKL:      make([]bool, 0, segments),
		SegmentSource:  make([]string, 0, segments),
		SegmentExample: make([]int32, 0, segments),
	}
	if pad != 0 {
		for i := range row.InputIDs {
			row.InputIDs[i] = pad
		}
	}
	return row
}

// KTOSequence is one sequence recovered from a kto_packed row.
type KTOSequence struct {
	PromptIDs     []int32 // loss_mask 0
	CompletionIDs []int32 // loss_mask 1: the completion, or the KL completion when KL
	Label         bool
	KL            bool
	Source        string
	Example       int32
}

// UnpackKTO recovers the sequences of a kto_packed row, in segment order, and checks the
// row's invariants on the way: equal column lengths; segments numbered 1, 2, … in order,
// each one contiguous run, then only padding; positions 0, 1, … within a segment and 0 on
// padding; loss_mask 0 on a segment's prompt, then 1 on its completion, and 0 on padding;
// per-segment lists as long as the number of segments, labels 0 or 1. A violation is an
// ErrBadRow error that says where.
func UnpackKTO(row PackedRow) ([]KTOSequence, error) {
	n := len(row.InputIDs)
	if len(row.SegmentIDs) != n || len(row.PositionIDs) != n || len(row.LossMask) != n {
		return nil, badRow("column lengths differ: input_ids %d, segment_ids %d, position_ids %d, loss_mask %d",
			n, len(row.SegmentIDs), len(row.PositionIDs), len(row.LossMask))
	}
	k := len(row.SegmentLabel)
	if len(row.SegmentKL) != k || len(row.SegmentSource) != k || len(row.SegmentExample) != k {
		return nil, badRow("per-segment lists differ: segment_label %d, segment_kl %d, segment_source %d, segment_example %d",
			k, len(row.SegmentKL), len(row.SegmentSource), len(row.SegmentExample))
	}
	spans, err := segmentSpans(row.SegmentIDs, row.PositionIDs, k)
	if err != nil {
		return nil, err
	}
	for i := spans[len(spans)-1]; i < n; i++ {
		if row.LossMask[i] != 0 {
			return nil, badRow("loss_mask %d on padding at %d", row.LossMask[i], i)
		}
	}
	seqs := make([]KTOSequence, k)
	for s := 0; s < k; s++ {
		lo, hi := spans[s], spans[s+1]
		split := hi
		for i := lo; i < hi; i++ {
			m := row.LossMask[i]
			if m != 0 && m != 1 {
				return nil, badRow("loss_mask %d at %d", m, i)
			}
			if m == 1 && split == hi {
				split = i
			}
			if m == 0 && split < hi {
				return nil, badRow("segment %d: loss_mask returns to 0 at %d after its completion began", s+1, i)
			}
		}
		if l := row.SegmentLabel[s]; l != 0 && l != 1 {
			return nil, badRow("segment %d: segment_label %d", s+1, l)
		}
		seqs[s] = KTOSequence{
			PromptIDs:     row.InputIDs[lo:split:split],
			CompletionIDs: row.InputIDs[split:hi:hi],
			Label:         row.SegmentLabel[s] == 1,
			KL:            row.SegmentKL[s],
			Source:        row.SegmentSource[s],
			Example:       row.SegmentExample[s],
		}
	}
	return seqs, nil
}

// segmentSpans checks segment numbering and positions and returns the k+1 boundaries of
// segments 1..k: spans[s] is where segment s+1 starts, spans[k] where padding starts.
func segmentSpans(segIDs, posIDs []int32, k int) ([]int, error) {
	spans := make([]int, 0, k+1)
	cur, start, padding := int32(0), 0, false
	for i, s := range segIDs {
		switch {
		case s == 0:
			if !padding {
				padding = true
				spans = append(spans, i)
			}
			if posIDs[i] != 0 {
				return nil, badRow("position %d on padding at %d, want 0", posIDs[i], i)
			}
		case padding:
			return nil, badRow("segment %d at %d after padding began", s, i)
		case s == cur:
			if posIDs[i] != int32(i-start) {
				return nil, badRow("segment %d: position %d at %d, want %d", s, posIDs[i], i, i-start)
			}
		case s == cur+1:
			cur, start = s, i
			spans = append(spans, i)
			if posIDs[i] != 0 {
				return nil, badRow("segment %d: position %d at its start %d, want 0", s, posIDs[i], i)
			}
		default:
			return nil, badRow("segment id %d at %d after segment %d", s, i, cur)
		}
	}
	if !padding {
		spans = append(spans, len(segIDs))
	}
	if int(cur) != k {
		return nil, badRow("%d segments in segment_ids, %d in the per-segment lists", cur, k)
	}
	return spans, nil
}

// positions writes 0, 1, 2, … into p.
func positions(p []int32) {
	for i := range p {
		p[i] = int32(i)
	}
}
