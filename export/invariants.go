package export

import (
	"fmt"
	"math"
	"slices"
	"sort"

	"github.com/ktoloader/ktoloader/kto"
)

// The per-kind invariants Verify checks. They are written here from DESIGN.md rather than
// borrowed from package kto, so that verify is a second opinion on the packer, not its echo.

// splitState is what Verify remembers about one split while it reads kto/, then
// kto_packed/ and sft/, which it checks against kto/.
type splitState struct {
	name string

	// kto/
	ktoSeen              bool
	kto                  SplitCounts // what kto/ holds, to compare with counts.splits
	batches, klTruncated int64
	curBatch             int64
	batch                []ktoBatchRow
	examples             map[exKey]*exInfo // (batch, index in batch) → what kto/ holds
	sftWant              map[uint64]int32  // multiset of desirable sequences, for sft/

	// kto_packed/
	packedSeen                           bool
	packedRows, packedSeqs, packedTokens int64
	packedLastBatch                      int64
	anyKL                                bool

	// sft/
	sftSeen                     bool
	sftRows, sftSeqs, sftTokens int64
	sftUnmatched                int64
	firstUnmatched              string
}

type ktoBatchRow struct {
	file                   string
	row                    int64
	prompt, completion, kl []int32
}

type exKey struct {
	batch   int64
	example int32
}

type exInfo struct {
	target, kl         uint64 // hashIDs(prompt length, prompt, completion / KL completion)
	label              bool
	seenTarget, seenKL int32
}

func (v *verifier) split(name string) *splitState {
	st := v.splits[name]
	if st == nil {
		st = &splitState{
			name: name, kto: SplitCounts{Behaviors: map[string]LabelCounts{}}, examples: map[exKey]*exInfo{},
			sftWant: map[uint64]int32{}, curBatch: -1, packedLastBatch: -1,
		}
		v.splits[name] = st
	}
	return st
}

// sftExtra is what an SFT sequence key carries besides its tokens: the prompt length when
// labels mark exactly the completion, nothing when earlier assistant turns are trained too.
func (v *verifier) sftExtra(promptLen int) int64 {
	if v.sftLoss == kto.SFTLossCompletion {
		return int64(promptLen)
	}
	return -1
}

func (v *verifier) ktoRow(st *splitState, file string, i int64, r *kto.KTORow) {
	st.ktoSeen = true
	st.kto.Add(r.Behavior, r.Label)
	p, c := len(r.PromptIDs), len(r.CompletionIDs)
	if c == 0 {
		v.add(file, i, CheckLength, "empty completion_ids")
	}
	if v.maxLen > 0 && p+c > v.maxLen {
		v.add(file, i, CheckLength, "prompt + completion is %d tokens, max_len %d", p+c, v.maxLen)
	}
	if v.maxLen > 0 && p+len(r.KLCompletionIDs) > v.maxLen {
		v.add(file, i, CheckLength, "prompt + KL completion is %d tokens, max_len %d", p+len(r.KLCompletionIDs), v.maxLen)
	}
	if r.BatchIndex != st.curBatch {
		if st.curBatch >= 0 {
			v.closeBatch(st, false)
			if r.BatchIndex != st.curBatch+1 {
				v.add(file, i, CheckBatch, "batch_index %d follows %d (batches are numbered consecutively, each one run of rows)", r.BatchIndex, st.curBatch)
			}
		} else if r.BatchIndex < 0 {
			v.add(file, i, CheckBatch, "negative batch_index %d", r.BatchIndex)
		}
		st.curBatch = r.BatchIndex
		st.batches++
	}
	j := int32(len(st.batch))
	st.batch = append(st.batch, ktoBatchRow{file: file, row: i, prompt: r.PromptIDs, completion: r.CompletionIDs, kl: r.KLCompletionIDs})
	key := exKey{r.BatchIndex, j}
	if _, dup := st.examples[key]; !dup {
		st.examples[key] = &exInfo{
			target: v.hashIDs(int64(p), r.PromptIDs, r.CompletionIDs),
			kl:     v.hashIDs(int64(p), r.PromptIDs, r.KLCompletionIDs),
			label:  r.Label,
		}
	}
	if r.Label {
		st.sftWant[v.hashIDs(v.sftExtra(p), r.PromptIDs, r.CompletionIDs)]++
	}
}

// closeBatch checks the batch just read: its size, and TRL's KL pairing, in which row j's
// KL completion is row j−1's completion and row 0 takes the last row's. A KL completion may
// be cut at its end so that prompt + KL completion fits max_len exactly.
func (v *verifier) closeBatch(st *splitState, last bool) {
	b := st.batch
	n := len(b)
	if n == 0 {
		return
	}
	if v.batchSize > 0 && (n > v.batchSize || (!last && n != v.batchSize)) {
		v.add(b[0].file, b[0].row, CheckBatch, "batch %d has %d rows, want %d (only the last batch may have fewer)", st.curBatch, n, v.batchSize)
	}
	for j := range b {
		prev := b[(j+n-1)%n]
		kl := b[j].kl
		switch {
		case slices.Equal(kl, prev.completion):
		case v.maxLen > 0 && len(kl) < len(prev.completion) && slices.Equal(kl, prev.completion[:len(kl)]) &&
			len(b[j].prompt)+len(kl) == v.maxLen:
			st.klTruncated++
		default:
			v.add(b[j].file, b[j].row, CheckKL, "KL_completion_ids (%d ids) is not the completion of the previous row of batch %d (%s row %d, %d ids)",
				len(kl), st.curBatch, prev.file, prev.row, len(prev.completion))
		}
	}
	clear(st.batch)
	st.batch = st.batch[:0]
}

func (v *verifier) packedRow(st *splitState, file string, i int64, r *kto.PackedRow) {
	st.packedSeen = true
	st.packedRows++
	if st.packedLastBatch > r.BatchIndex {
		v.add(file, i, CheckBatch, "batch_index %d after %d: a batch's rows must be consecutive", r.BatchIndex, st.packedLastBatch)
	}
	st.packedLastBatch = r.BatchIndex
	n := len(r.InputIDs)
	if len(r.SegmentIDs) != n || len(r.PositionIDs) != n || len(r.LossMask) != n {
		v.add(file, i, CheckLength, "column lengths differ: input_ids %d, segment_ids %d, position_ids %d, loss_mask %d",
			n, len(r.SegmentIDs), len(r.PositionIDs), len(r.LossMask))
		return
	}
	if v.maxLen > 0 && n != v.maxLen {
		v.add(file, i, CheckLength, "row is %d tokens, want exactly max_len %d", n, v.maxLen)
	}
	k := len(r.SegmentLabel)
	if len(r.SegmentKL) != k || len(r.SegmentSource) != k || len(r.SegmentExample) != k {
		v.add(file, i, CheckSegments, "per-segment lists differ: segment_label %d, segment_kl %d, segment_source %d, segment_example %d",
			k, len(r.SegmentKL), len(r.SegmentSource), len(r.SegmentExample))
		return
	}
	spans, ok := v.segmentSpans(file, i, r, k)
	if !ok {
		return
	}
	st.packedTokens += int64(spans[k])
	for s := 0; s < k; s++ {
		lo, hi := spans[s], spans[s+1]
		split := hi // first completion token
		for t := lo; t < hi; t++ {
			m := r.LossMask[t]
			switch {
			case m != 0 && m != 1:
				v.add(file, i, CheckLossMask, "segment %d: loss_mask %d at %d, want 0 or 1", s+1, m, t)
				return
			case m == 1 && split == hi:
				split = t
			case m == 0 && split < hi:
				v.add(file, i, CheckLossMask, "segment %d: loss_mask back to 0 at %d after the completion began at %d", s+1, t, split)
				return
			}
		}
		if l := r.SegmentLabel[s]; l != 0 && l != 1 {
			v.add(file, i, CheckSegments, "segment %d: segment_label %d, want 0 or 1", s+1, l)
		}
		st.packedSeqs++
		kl := r.SegmentKL[s]
		st.anyKL = st.anyKL || kl
		if !st.ktoSeen {
			continue
		}
		ex := r.SegmentExample[s]
		info := st.examples[exKey{r.BatchIndex, ex}]
		if info == nil {
			v.add(file, i, CheckPacked, "segment %d: kto/ %s has no example %d in batch %d", s+1, st.name, ex, r.BatchIndex)
			continue
		}
		h := v.hashIDs(int64(split-lo), r.InputIDs[lo:hi])
		what := "target"
		want := info.target
		seen := &info.seenTarget
		if kl {
			what, want, seen = "KL pair", info.kl, &info.seenKL
		}
		*seen++
		if *seen > 1 {
			v.add(file, i, CheckPacked, "segment %d: %s of batch %d example %d packed twice", s+1, what, r.BatchIndex, ex)
		}
		if h != want {
			v.add(file, i, CheckPacked, "segment %d: not the %s of batch %d example %d in kto/ (prompt with loss_mask 0, then the completion with 1)", s+1, what, r.BatchIndex, ex)
		}
		if !kl && (r.SegmentLabel[s] == 1) != info.label {
			v.add(file, i, CheckPacked, "segment %d: segment_label %d, kto/ label %v", s+1, r.SegmentLabel[s], info.label)
		}
	}
}

// segmentSpans checks segment ids (1..k, each one contiguous run, in order, then only
// padding), positions (0, 1, … within each segment) and loss_mask 0 on padding. It returns
// the k+1 boundaries: spans[s] is where segment s+1 starts, spans[k] where padding starts.
func (v *verifier) segmentSpans(file string, i int64, r *kto.PackedRow, k int) ([]int, bool) {
	spans := make([]int, 0, k+1)
	cur, start, padding := int32(0), 0, false
	for t, s := range r.SegmentIDs {
		switch {
		case s == 0:
			if !padding {
				padding = true
				spans = append(spans, t)
			}
			if r.LossMask[t] != 0 {
				v.add(file, i, CheckLossMask, "loss_mask %d on padding at %d", r.LossMask[t], t)
				return nil, false
			}
			continue
		case padding:
			v.add(file, i, CheckSegments, "segment %d at %d after padding began", s, t)
			return nil, false
		case s == cur+1:
			cur, start = s, t
			spans = append(spans, t)
		case s != cur:
			v.add(file, i, CheckSegments, "segment id %d at %d follows segment %d (segments run 1, 2, … each in one piece)", s, t, cur)
			return nil, false
		}
		if want := int32(t - start); r.PositionIDs[t] != want {
			v.add(file, i, CheckSegments, "segment %d: position %d at %d, want %d (positions restart at 0 per segment)", s, r.PositionIDs[t], t, want)
			return nil, false
		}
	}
	if !padding {
		spans = append(spans, len(r.SegmentIDs))
	}
	if int(cur) != k {
		v.add(file, i, CheckSegments, "%d segments in segment_ids, %d in the per-segment lists", cur, k)
		return nil, false
	}
	return spans, true
}

func (v *verifier) sftRow(st *splitState, file string, i int64, r *kto.SFTRow) {
	st.sftSeen = true
	st.sftRows++
	n := len(r.InputIDs)
	if len(r.Labels) != n || len(r.PositionIDs) != n {
		v.add(file, i, CheckLength, "column lengths differ: input_ids %d, labels %d, position_ids %d", n, len(r.Labels), len(r.PositionIDs))
		return
	}
	if v.maxLen > 0 && n > v.maxLen {
		v.add(file, i, CheckLength, "row is %d tokens, max_len %d", n, v.maxLen)
	}
	sum := 0
	for _, l := range r.SeqLengths {
		if l <= 0 {
			v.add(file, i, CheckSFT, "seq_lengths holds %d", l)
			return
		}
		sum += int(l)
	}
	if sum > n {
		v.add(file, i, CheckSFT, "seq_lengths sum to %d, the row is %d long", sum, n)
		return
	}
	for t := sum; t < n; t++ {
		if r.Labels[t] != IgnoreIndex {
			v.add(file, i, CheckSFT, "label %d on padding at %d, want %d", r.Labels[t], t, IgnoreIndex)
			return
		}
	}
	st.sftTokens += int64(sum)
	lo := 0
	for s, l := range r.SeqLengths {
		hi := lo + int(l)
		split := hi // first label that is not ignored
		for t := lo; t < hi; t++ {
			if want := int32(t - lo); r.PositionIDs[t] != want {
				v.add(file, i, CheckSFT, "sequence %d: position %d at %d, want %d", s+1, r.PositionIDs[t], t, want)
				return
			}
			lab := r.Labels[t]
			switch {
			case lab != IgnoreIndex && lab != r.InputIDs[t]:
				v.add(file, i, CheckSFT, "sequence %d: label %d at %d is neither %d nor input id %d", s+1, lab, t, IgnoreIndex, r.InputIDs[t])
				return
			case lab != IgnoreIndex && split == hi:
				split = t
			case lab == IgnoreIndex && split < hi && v.sftLoss == kto.SFTLossCompletion:
				v.add(file, i, CheckSFT, "sequence %d: label %d at %d inside the completion (sft_loss completion)", s+1, lab, t)
				return
			}
		}
		if split == hi {
			v.add(file, i, CheckSFT, "sequence %d: no token takes loss", s+1)
		}
		st.sftSeqs++
		if st.ktoSeen {
			key := v.hashIDs(v.sftExtra(split-lo), r.InputIDs[lo:hi])
			if st.sftWant[key] > 0 {
				st.sftWant[key]--
			} else {
				if st.sftUnmatched == 0 {
					st.firstUnmatched = fmt.Sprintf("%s row %d sequence %d", file, i, s+1)
				}
				st.sftUnmatched++
			}
		}
		lo = hi
	}
}

// finishGroup runs the checks that need a whole split of a kind.
func (v *verifier) finishGroup(g *group) {
	st := v.splits[g.split]
	if st == nil {
		return
	}
	first := g.files[0].Path
	switch g.kind {
	case KindKTO:
		v.closeBatch(st, true)
		if bi, ok := v.m.KTO.Splits[g.split]; ok && bi.KLTruncated != st.klTruncated {
			v.add("", -1, CheckCounts, "kto.splits.%s.kl_truncated is %d, kto/ has %d cut KL completions", g.split, bi.KLTruncated, st.klTruncated)
		}
	case KindKTOPacked:
		if st.ktoSeen {
			var noTarget, noKL []exKey
			for k, e := range st.examples {
				if e.seenTarget == 0 {
					noTarget = append(noTarget, k)
				}
				if st.anyKL && e.seenKL == 0 {
					noKL = append(noKL, k)
				}
			}
			for _, miss := range []struct {
				what string
				keys []exKey
			}{{"targets", noTarget}, {"KL pairs", noKL}} {
				if len(miss.keys) == 0 {
					continue
				}
				sortKeys(miss.keys)
				v.add(first, -1, CheckPacked, "%d kto/ examples have no packed %s (first: batch %d example %d)",
					len(miss.keys), miss.what, miss.keys[0].batch, miss.keys[0].example)
			}
		}
		v.checkPackInfo(first, "kto_packed", v.m.Packing.KTOPacked, g.split, st.packedRows, st.packedSeqs, st.packedTokens)
	case KindSFT:
		if st.ktoSeen {
			var missing int64
			for _, n := range st.sftWant {
				missing += int64(n)
			}
			if missing > 0 {
				v.add(first, -1, CheckSFTMatch, "%d desirable kto/ examples of %s are not in sft/", missing, g.split)
			}
			if st.sftUnmatched > 0 {
				v.add(first, -1, CheckSFTMatch, "%d sft/ sequences are not desirable kto/ examples of %s (first: %s)",
					st.sftUnmatched, g.split, st.firstUnmatched)
			}
		}
		if sc, ok := v.m.Counts.Splits[g.split]; ok && sc.Desirable != st.sftSeqs {
			v.add(first, -1, CheckSFTMatch, "sft/ %s holds %d sequences, counts.splits.%s.desirable is %d", g.split, st.sftSeqs, g.split, sc.Desirable)
		}
		v.checkPackInfo(first, "sft", v.m.Packing.SFT, g.split, st.sftRows, st.sftSeqs, st.sftTokens)
	}
}

func sortKeys(keys []exKey) {
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].batch != keys[j].batch {
			return keys[i].batch < keys[j].batch
		}
		return keys[i].example < keys[j].example
	})
}

// checkPackInfo compares the manifest's packing stats for a split with what the files hold.
func (v *verifier) checkPackInfo(file, kind string, infos map[string]PackInfo, split string, rows, seqs, tokens int64) {
	pi, ok := infos[split]
	if !ok {
		return
	}
	if pi.Rows != rows || pi.Sequences != seqs || pi.Tokens != tokens {
		v.add(file, -1, CheckPackInfo, "packing.%s.%s says %d rows, %d sequences, %d tokens; the files hold %d, %d, %d",
			kind, split, pi.Rows, pi.Sequences, pi.Tokens, rows, seqs, tokens)
	}
	if v.maxLen > 0 && rows > 0 {
		fill := float64(tokens) / (float64(rows) * float64(v.maxLen))
		if math.Abs(fill-pi.Fill) > 1e-6 {
			v.add(file, -1, CheckPackInfo, "packing.%s.%s.fill_ratio is %g, the files give %g", kind, split, pi.Fill, fill)
		}
	}
}

// checkCounts checks the manifest's counts against each other and against kto/.
func (v *verifier) checkCounts() {
	c := &v.m.Counts
	if c.Read != c.Written+c.Rejected {
		v.add("", -1, CheckCounts, "read %d ≠ written %d + rejected %d", c.Read, c.Written, c.Rejected)
	}
	var reasons int64
	for _, n := range c.Reasons {
		reasons += n
	}
	if reasons != c.Rejected {
		v.add("", -1, CheckCounts, "reasons sum to %d, rejected is %d", reasons, c.Rejected)
	}
	names := make([]string, 0, len(c.Splits)+len(v.splits))
	var examples int64
	for name, sc := range c.Splits {
		names = append(names, name)
		examples += sc.Examples
	}
	for name := range v.splits {
		if _, ok := c.Splits[name]; !ok {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	// Examples that --drop-last leaves out are rejected (reason drop_last), not written, so
	// the splits hold exactly the written rows.
	if len(c.Splits) > 0 && examples != c.Written {
		v.add("", -1, CheckCounts, "splits hold %d examples, written is %d", examples, c.Written)
	}
	for _, name := range names {
		sc, inCounts := c.Splits[name]
		st := v.splits[name]
		if inCounts {
			if sc.Desirable+sc.Undesirable != sc.Examples {
				v.add("", -1, CheckCounts, "splits.%s: desirable %d + undesirable %d ≠ examples %d", name, sc.Desirable, sc.Undesirable, sc.Examples)
			}
			if len(sc.Behaviors) > 0 {
				var sum LabelCounts
				for _, lc := range sc.Behaviors {
					sum.Desirable += lc.Desirable
					sum.Undesirable += lc.Undesirable
				}
				if sum.Desirable != sc.Desirable || sum.Undesirable != sc.Undesirable {
					v.add("", -1, CheckCounts, "splits.%s.behaviors sum to %d desirable, %d undesirable; the split has %d, %d",
						name, sum.Desirable, sum.Undesirable, sc.Desirable, sc.Undesirable)
				}
			}
		}
		if st == nil || !st.ktoSeen {
			if inCounts && sc.Examples > 0 {
				v.add("", -1, CheckCounts, "splits.%s holds %d examples but no kto/ shard of it is listed", name, sc.Examples)
			}
			continue
		}
		if !inCounts {
			v.add("", -1, CheckCounts, "kto/ has split %q, counts.splits does not", name)
		}
		got := st.kto
		// totals checks what a manifest section says of the split against kto/.
		totals := func(section string, examples, desirable, undesirable int64) {
			if examples != got.Examples || desirable != got.Desirable || undesirable != got.Undesirable {
				v.add("", -1, CheckCounts, "%s.splits.%s says %d examples (%d desirable, %d undesirable), kto/ holds %d (%d, %d)",
					section, name, examples, desirable, undesirable, got.Examples, got.Desirable, got.Undesirable)
			}
		}
		if inCounts {
			totals("counts", sc.Examples, sc.Desirable, sc.Undesirable)
		}
		if bi, ok := v.m.KTO.Splits[name]; ok {
			totals("kto", bi.Examples, bi.Desirable, bi.Undesirable)
			if bi.Batches != st.batches {
				v.add("", -1, CheckCounts, "kto.splits.%s.batches is %d, kto/ holds %d", name, bi.Batches, st.batches)
			}
		}
		if inCounts && len(sc.Behaviors) > 0 {
			behaviors := make([]string, 0, len(sc.Behaviors))
			for b := range sc.Behaviors {
				behaviors = append(behaviors, b)
			}
			for b := range got.Behaviors {
				if _, ok := sc.Behaviors[b]; !ok {
					behaviors = append(behaviors, b)
				}
			}
			slices.Sort(behaviors)
			for _, b := range behaviors {
				if sc.Behaviors[b] != got.Behaviors[b] {
					v.add("", -1, CheckCounts, "splits.%s.behaviors[%q] is %+v, kto/ holds %+v", name, b, sc.Behaviors[b], got.Behaviors[b])
				}
			}
		}
	}
}
