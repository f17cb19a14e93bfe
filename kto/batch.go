package kto

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/ktoloader/ktoloader/tokenize"
)

// BatchCounts count how one split's KTO batches came out: what BatchStats reports, and what
// the manifest records per split (export.BatchInfo is this type, so the JSON names and the
// field order here are the manifest's).
type BatchCounts struct {
	Examples    int64 `json:"examples"` // batched, after DropLast: the split's rows in kto/
	Desirable   int64 `json:"desirable"`
	Undesirable int64 `json:"undesirable"`
	Batches     int64 `json:"batches"`
	// LastBatch is the size of the last batch: BatchSize when every batch is full. A partial
	// batch is always the last one, so that every run of BatchSize rows is one batch.
	LastBatch int64 `json:"last_batch"`
	Dropped   int64 `json:"dropped"` // examples left out by DropLast
	// Batches that hold no desirable (no undesirable) example: the leftover imbalance. Each
	// is the fewest the counts allow, e.g. max(0, batches − desirable) for desirable.
	NoDesirable   int64 `json:"batches_without_desirable"`
	NoUndesirable int64 `json:"batches_without_undesirable"`
	// KLTruncated counts KL completions cut at the end to fit prompt+KL completion in MaxLen.
	KLTruncated int64 `json:"kl_truncated"`
}

// AddBatch counts one more batch, of n examples of which d are desirable, written after the
// ones counted so far (so it is the last batch). Readers that count batches from rows as
// written (prep's partitioned runs, merge) use it.
func (c *BatchCounts) AddBatch(n, d int) {
	c.Examples += int64(n)
	c.Desirable += int64(d)
	c.Undesirable += int64(n - d)
	c.Batches++
	c.LastBatch = int64(n)
	if d == 0 {
		c.NoDesirable++
	}
	if d == n {
		c.NoUndesirable++
	}
}

// BatchStats reports how the KTO batches came out.
type BatchStats struct {
	BatchSize int `json:"batch_size"`
	BatchCounts
	// Suggested KTOConfig desirable_weight / undesirable_weight, by SuggestWeights.
	DesirableWeight   float64 `json:"desirable_weight"`
	UndesirableWeight float64 `json:"undesirable_weight"`
}

// Batches orders examples into KTO batches (PlanBatches) and returns one KTORow per example
// in final training order, with BatchIndex and KLCompletionIDs set as TRL's KTOTrainer
// would set them for a sequential sampler with per_device_train_batch_size = BatchSize:
//
//	# trl/trainer/kto_trainer.py (b12c2cf), _get_kl_dataset, mapped with
//	# batched=True, batch_size=args.per_device_train_batch_size:
//	batch["answer_input_ids"] = [batch["answer_input_ids"][-1]] + batch["answer_input_ids"][:-1]
//	# trl/experimental/kto/kto_trainer.py, _get_kl_completion_ids: the same on "completion_ids"
//
// so row i's KL completion is row i−1's completion and row 0 takes the last row's. A batch
// of one (only the last batch can be one) pairs with itself, as the same code does.
//
// A KL sequence (prompt_i + completion_{i−1}) can exceed MaxLen although both examples fit.
// Its KL completion is then cut at the end to fit, which is what TRL's collator does to it
// (trl/experimental/kto/kto_trainer.py, DataCollatorForUnpairedPreference.torch_call:
// full_ids = full_ids[: self.max_length]); cutting it here makes kto/ and kto_packed/ hold the
// same KL sequences, and TRL's own cut a no-op with max_length = MaxLen. The cut is counted
// in KLTruncated. The rows share id slices with exs.
//
// Every example must already fit in MaxLen (see Truncate); one that does not is an
// ErrTooLong error naming its source, and an empty completion is ErrBadExample.
func Batches(exs []tokenize.Example, cfg Config) ([]KTORow, BatchStats, error) {
	cfg, err := cfg.WithDefaults()
	if err != nil {
		return nil, BatchStats{}, err
	}
	keys := make([]Key, len(exs))
	for i := range exs {
		ex := &exs[i]
		if err := checkExample(ex); err != nil {
			return nil, BatchStats{}, err
		}
		if n := len(ex.PromptIDs) + len(ex.CompletionIDs); n > cfg.MaxLen {
			return nil, BatchStats{}, fmt.Errorf("%s: %w", ex.Source, &LengthError{Len: n, MaxLen: cfg.MaxLen})
		}
		keys[i] = KeyOf(ex)
	}
	plan, stats, err := PlanBatches(keys, cfg)
	if err != nil {
		return nil, stats, err
	}
	rows := make([]KTORow, 0, stats.Examples)
	batch := make([]tokenize.Example, 0, cfg.BatchSize)
	for b, members := range plan {
		batch = batch[:0]
		for _, i := range members {
			batch = append(batch, exs[i])
		}
		r, cut := BatchRows(batch, int64(b), cfg)
		rows = append(rows, r...)
		stats.KLTruncated += int64(cut)
	}
	return rows, stats, nil
}

// BatchRows makes the kto/ rows of one planned batch (its examples in row order, as
// PlanBatches lists them): KL pairs as described at Batches, BatchIndex b. It returns the
// number of KL completions cut to fit MaxLen. Only cfg.MaxLen is read (0 means the
// default); the examples are expected to fit in it already.
func BatchRows(batch []tokenize.Example, b int64, cfg Config) ([]KTORow, int) {
	maxLen := cfg.MaxLen
	if maxLen == 0 {
		maxLen = DefaultMaxLen
	}
	rows := make([]KTORow, len(batch))
	cut := 0
	for j := range batch {
		ex := &batch[j]
		kl := batch[(j+len(batch)-1)%len(batch)].CompletionIDs
		if room := max(0, maxLen-len(ex.PromptIDs)); len(kl) > room {
			kl = kl[:room]
			cut++
		}
		rows[j] = KTORow{
			PromptIDs:       ex.PromptIDs,
			CompletionIDs:   ex.CompletionIDs,
			KLCompletionIDs: kl,
			Label:           ex.Label,
			Behavior:        ex.Behavior,
			Prompt:          ex.Prompt,
			Completion:      ex.Completion,
			Source:          ex.Source.String(), // the shard form
			BatchIndex:      b,
		}
	}
	return rows, cut
}

// PlanBatches returns batches of indices into keys, in final order, each batch's indices in
// row order. How:
//
//   - Each label's examples are ordered by a key drawn from the seed and the example's
//     content hash, so the order does not depend on the input order.
//   - Every batch holds BatchSize examples except possibly the last (kept by default, as
//     TRL's DataLoader keeps it; DropLast drops those examples, from the more numerous label,
//     undesirable on a tie).
//   - The desirable examples are apportioned to batches in proportion to batch size (largest
//     remainder), so full batches differ by at most one desirable example: a surplus of one
//     label is spread over all batches, not left at the end. If the last, partial batch then
//     lacks a label that a full batch holds twice, one example moves. The number of batches
//     without a label is then the least the counts allow.
//   - The full batches are shuffled by the seed (the partial one stays last), and within a
//     batch the labels alternate as evenly as the counts allow (desirable at the positions j
//     where j·d mod size < d, d the batch's desirable count).
func PlanBatches(keys []Key, cfg Config) ([][]int, BatchStats, error) {
	cfg, err := cfg.WithDefaults()
	if err != nil {
		return nil, BatchStats{}, err
	}
	var des, und []int
	for i, k := range keys {
		if k.Label {
			des = append(des, i)
		} else {
			und = append(und, i)
		}
	}
	byContent := func(a, b int) int {
		ka := seededKey(cfg.Seed, saltExample, keys[a].Hash)
		kb := seededKey(cfg.Seed, saltExample, keys[b].Hash)
		if c := cmp.Compare(ka, kb); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	}
	slices.SortFunc(des, byContent)
	slices.SortFunc(und, byContent)

	B := cfg.BatchSize
	stats := BatchStats{BatchSize: B}
	if r := len(keys) % B; cfg.DropLast && r > 0 {
		for ; r > 0; r-- {
			if len(des) > len(und) {
				des = des[:len(des)-1]
			} else {
				und = und[:len(und)-1]
			}
			stats.Dropped++
		}
	}
	nD, nU := len(des), len(und)
	n := nD + nU
	stats.Examples, stats.Desirable, stats.Undesirable = int64(n), int64(nD), int64(nU)
	stats.DesirableWeight, stats.UndesirableWeight = SuggestWeights(nD, nU)
	if n == 0 {
		return nil, stats, nil
	}

	sizes := make([]int, n/B, n/B+1)
	for k := range sizes {
		sizes[k] = B
	}
	if r := n % B; r > 0 {
		sizes = append(sizes, r)
	}
	nFull := n / B
	last := len(sizes) - 1

	// Largest-remainder apportionment of nD over batch sizes. Products stay in int64:
	// size × nD ≤ BatchSize × n.
	d := make([]int, len(sizes))
	rem := make([]int64, len(sizes))
	placed := 0
	for k, s := range sizes {
		q := int64(s) * int64(nD)
		d[k] = int(q / int64(n))
		rem[k] = q % int64(n)
		placed += d[k]
	}
	byRem := make([]int, len(sizes))
	for k := range byRem {
		byRem[k] = k
	}
	slices.SortStableFunc(byRem, func(a, b int) int { return cmp.Compare(rem[b], rem[a]) })
	for _, k := range byRem[:nD-placed] {
		d[k]++
	}
	// Repair the partial batch: it may lack a label that some full batch holds twice.
	if s := sizes[last]; last >= nFull && s >= 2 {
		if d[last] == 0 {
			if k := argmax(d[:nFull]); k >= 0 && d[k] >= 2 {
				d[k]--
				d[last]++
			}
		} else if d[last] == s {
			if k := argmin(d[:nFull]); k >= 0 && B-d[k] >= 2 {
				d[k]++
				d[last]--
			}
		}
	}
	// Shuffle which full batch gets which share; the partial batch stays last.
	newRNG(cfg.Seed, saltBatch).Shuffle(nFull, func(i, j int) { d[i], d[j] = d[j], d[i] })

	batches := make([][]int, len(sizes))
	flat := make([]int, 0, n)
	di, ui := 0, 0
	for k, s := range sizes {
		start := len(flat)
		for j := 0; j < s; j++ {
			if (j*d[k])%s < d[k] {
				flat = append(flat, des[di])
				di++
			} else {
				flat = append(flat, und[ui])
				ui++
			}
		}
		batches[k] = flat[start:len(flat):len(flat)]
		if d[k] == 0 {
			stats.NoDesirable++
		}
		if d[k] == s {
			stats.NoUndesirable++
		}
	}
	stats.Batches = int64(len(batches))
	stats.LastBatch = int64(sizes[last])
	return batches, stats, nil
}

func argmax(xs []int) int {
	best := -1
	for i, x := range xs {
		if best < 0 || x > xs[best] {
			best = i
		}
	}
	return best
}

func argmin(xs []int) int {
	best := -1
	for i, x := range xs {
		if best < 0 || x < xs[best] {
			best = i
		}
	}
	return best
}

// TRL's bounds on the weighted desirable/undesirable ratio (w_D·n_D)/(w_U·n_U), from Eq. (8)
// of the KTO paper (arXiv 2402.01306) as KTOTrainer checks them:
//
//	# trl/trainer/kto_trainer.py (b12c2cf), KTOTrainer.__init__, "calculate dataset desirability balance":
//	des_weight_lower_bound = round((num_undesirable * self.undesirable_weight / num_desirable) * 1, 2)
//	des_weight_upper_bound = round((num_undesirable * self.undesirable_weight / num_desirable) * 1.33, 2)
//	und_weight_lower_bound = round((num_desirable * self.desirable_weight / num_undesirable) / 1.33, 2)
//	und_weight_upper_bound = round((num_desirable * self.desirable_weight / num_undesirable) / 1, 2)
//	# it warns unless des_weight_in_range or und_weight_in_range.
const (
	trlRatioLow  = 1.0
	trlRatioHigh = 1.33 // TRL's literal; the paper's 4/3
)

// SuggestWeights returns KTOConfig's desirable_weight and undesirable_weight for nD
// desirable and nU undesirable training examples. It keeps 1.0/1.0 when TRL's check above
// passes with them. Otherwise it raises the minority label's weight, leaving the majority
// at 1 so the bulk of the loss keeps its scale, to the middle of the range TRL recommends
// for it (the ratio lands at (1 + 1.33)/2 = 1.165), rounded to 2 decimals as TRL prints
// them: w_D = 1.165·n_U/n_D when desirable examples are too few; w_U = (n_D/n_U)·(1 + 1/1.33)/2
// when they are too many. With no example of one label there is nothing to balance: 1.0/1.0.
func SuggestWeights(nD, nU int) (wD, wU float64) {
	if nD <= 0 || nU <= 0 || trlWeightsOK(nD, nU, 1, 1) {
		return 1, 1
	}
	r := float64(nD) / float64(nU)
	if r < trlRatioLow {
		return round2((trlRatioLow + trlRatioHigh) / 2 / r), 1
	}
	return 1, round2(r * (1/trlRatioHigh + 1/trlRatioLow) / 2)
}

// trlWeightsOK is TRL's check (see above) for nD, nU > 0.
func trlWeightsOK(nD, nU int, wD, wU float64) bool {
	if nD == nU {
		return true
	}
	d, u := float64(nD), float64(nU)
	desLo, desHi := round2(u*wU/d*trlRatioLow), round2(u*wU/d*trlRatioHigh)
	undLo, undHi := round2(d*wD/u/trlRatioHigh), round2(d*wD/u/trlRatioLow)
	return (desLo <= wD && wD <= desHi) || (undLo <= wU && wU <= undHi)
}

// round2 rounds to 2 decimals, halves to even as Python's round does.
func round2(x float64) float64 { return math.RoundToEven(x*100) / 100 }
