package kto

import (
	"fmt"

	"github.com/ktoloader/ktoloader/tokenize"
)

// SFTPacker packs the desirable examples of one split into sft/ rows as they stream in:
// best-fit-decreasing (Pack) over windows of SFTWindow sequences, so it holds one window of
// ids at a time, never the whole split. Rows come out window by window, each window's rows
// in the order Pack opened them; within a row, sequences keep their input order. The
// output depends only on the input order and Config.
//
// A row of MaxLen = 12 holding two sequences (P prompt, C completion, _ padding), with
// SFTLoss "completion":
//
//	input_ids     P  P  C  C  P  P  P  C  _  _  _  _
//	labels        -  -  C  C  -  -  -  C  -  -  -  -     (- is −100)
//	position_ids  0  1  2  3  0  1  2  3  0  0  0  0
//	seq_lengths   [4, 4]
//
// With SFTLoss "all-assistant", prompt tokens marked in PromptAssistant (earlier assistant
// turns) keep their ids in labels too. Labels are aligned with input_ids, unshifted.
// Padding is PadID with label −100 and position 0, and is not counted in seq_lengths.
type SFTPacker struct {
	cfg    Config
	window []sftSeq
	stats  PackStats
}

type sftSeq struct {
	prompt, completion []int32
	assistant          []bool
}

// NewSFTPacker validates cfg and returns an empty packer.
func NewSFTPacker(cfg Config) (*SFTPacker, error) {
	cfg, err := cfg.WithDefaults()
	if err != nil {
		return nil, err
	}
	return &SFTPacker{cfg: cfg, stats: PackStats{MaxLen: cfg.MaxLen}}, nil
}

// Add takes the next example. Undesirable examples are skipped: SFT learns from desirable
// completions only. When a window fills, its rows are returned. An example over MaxLen is
// an ErrTooLong error (Truncate first); ErrBadExample reports an empty completion or a
// misaligned PromptAssistant.
func (p *SFTPacker) Add(ex *tokenize.Example) ([]SFTRow, error) {
	if !ex.Label {
		return nil, nil
	}
	if n := len(ex.PromptIDs) + len(ex.CompletionIDs); n > p.cfg.MaxLen {
		return nil, fmt.Errorf("%s: %w", ex.Source, &LengthError{Len: n, MaxLen: p.cfg.MaxLen})
	}
	if err := checkExample(ex); err != nil {
		return nil, err
	}
	p.window = append(p.window, sftSeq{ex.PromptIDs, ex.CompletionIDs, ex.PromptAssistant})
	if len(p.window) < p.cfg.SFTWindow {
		return nil, nil
	}
	return p.Flush(), nil
}

// Flush packs what the current window holds and returns its rows. Call it once the input
// ends.
func (p *SFTPacker) Flush() []SFTRow {
	if len(p.window) == 0 {
		return nil
	}
	lengths := make([]int, len(p.window))
	for i, s := range p.window {
		lengths[i] = len(s.prompt) + len(s.completion)
	}
	bins := bfd(lengths, p.cfg.MaxLen) // Add admitted only sequences that fit
	allAssistant := p.cfg.SFTLoss == SFTLossAllAssistant
	rows := make([]SFTRow, len(bins))
	for b, bin := range bins {
		L := p.cfg.MaxLen
		buf := make([]int32, 3*L)
		row := SFTRow{
			InputIDs:    buf[0:L:L],
			Labels:      buf[L : 2*L : 2*L],
			PositionIDs: buf[2*L : 3*L : 3*L],
			SeqLengths:  make([]int32, 0, len(bin)),
		}
		for i := range row.Labels {
			row.InputIDs[i], row.Labels[i] = p.cfg.PadID, IgnoreIndex
		}
		pos := 0
		for _, item := range bin {
			s := &p.window[item]
			np, n := len(s.prompt), len(s.prompt)+len(s.completion)
			copy(row.InputIDs[pos:], s.prompt)
			copy(row.InputIDs[pos+np:], s.completion)
			copy(row.Labels[pos+np:], s.completion)
			if allAssistant && len(s.assistant) != 0 {
				for k, a := range s.assistant {
					if a {
						row.Labels[pos+k] = s.prompt[k]
					}
				}
			}
			positions(row.PositionIDs[pos : pos+n])
			row.SeqLengths = append(row.SeqLengths, int32(n))
			pos += n
		}
		p.stats.Tokens += int64(pos)
		rows[b] = row
	}
	p.stats.Rows += int64(len(rows))
	p.stats.Sequences += int64(len(p.window))
	p.stats.fill()
	clear(p.window) // drop references to the ids
	p.window = p.window[:0]
	return rows
}

// Stats reports what has been packed so far.
func (p *SFTPacker) Stats() PackStats { return p.stats }

// PackSFT packs the desirable examples of exs with an SFTPacker.
func PackSFT(exs []tokenize.Example, cfg Config) ([]SFTRow, PackStats, error) {
	p, err := NewSFTPacker(cfg)
	if err != nil {
		return nil, PackStats{}, err
	}
	var rows []SFTRow
	for i := range exs {
		r, err := p.Add(&exs[i])
		if err != nil {
			return nil, p.Stats(), err
		}
		rows = append(rows, r...)
	}
	rows = append(rows, p.Flush()...)
	return rows, p.Stats(), nil
}

// SFTSequence is one sequence recovered from an sft/ row.
type SFTSequence struct {
	InputIDs []int32
	Labels   []int32 // −100 or the input id
}

// UnpackSFT recovers the sequences of an sft/ row and checks its invariants: equal column
// lengths; positive seq_lengths summing to at most the row length; positions 0, 1, …
// within each sequence and 0 on padding; labels −100 or equal to the input id, and −100 on
// padding. A violation is an ErrBadRow error that says where.
func UnpackSFT(row SFTRow) ([]SFTSequence, error) {
	n := len(row.InputIDs)
	if len(row.Labels) != n || len(row.PositionIDs) != n {
		return nil, badRow("column lengths differ: input_ids %d, labels %d, position_ids %d", n, len(row.Labels), len(row.PositionIDs))
	}
	seqs := make([]SFTSequence, 0, len(row.SeqLengths))
	pos := 0
	for s, l := range row.SeqLengths {
		if l < 1 || int(l) > n-pos {
			return nil, badRow("seq_lengths[%d] = %d with %d tokens left in the row", s, l, n-pos)
		}
		for k := 0; k < int(l); k++ {
			i := pos + k
			if row.PositionIDs[i] != int32(k) {
				return nil, badRow("sequence %d: position %d at %d, want %d", s, row.PositionIDs[i], i, k)
			}
			if lab := row.Labels[i]; lab != IgnoreIndex && lab != row.InputIDs[i] {
				return nil, badRow("sequence %d: label %d at %d for input id %d", s, lab, i, row.InputIDs[i])
			}
		}
		end := pos + int(l)
		seqs = append(seqs, SFTSequence{InputIDs: row.InputIDs[pos:end:end], Labels: row.Labels[pos:end:end]})
		pos = end
	}
	for i := pos; i < n; i++ {
		if row.PositionIDs[i] != 0 || row.Labels[i] != IgnoreIndex {
			return nil, badRow("padding at %d has position %d, label %d; want 0, -100", i, row.PositionIDs[i], row.Labels[i])
		}
	}
	return seqs, nil
}
