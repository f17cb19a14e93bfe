package train

import (
	"cmp"
	"errors"
	"fmt"

	"github.com/gomlx/gomlx/pkg/core/graph"
)

// LossType selects the loss, by TRL's KTOConfig.loss_type names.
type LossType string

const (
	// LossKTO is Eq. 7 of the KTO paper as TRL computes it: desirable examples lose
	// 1 − σ(β(r − z0)), undesirable ones 1 − σ(β(z0 − r)), where r is the policy/reference
	// log-ratio of the completion and z0 the batch's KL estimate, clamped at 0 and detached.
	LossKTO LossType = "kto"
	// LossAPOZeroUnpaired is TRL's unpaired APO-zero: desirable 1 − σ(βr), undesirable σ(βr);
	// no KL estimate (TRL reports kl = 0).
	LossAPOZeroUnpaired LossType = "apo_zero_unpaired"
)

// Defaults of TRL's KTOConfig.
const (
	DefaultBeta              = 0.1
	DefaultDesirableWeight   = 1.0
	DefaultUndesirableWeight = 1.0
)

// LossConfig holds the loss hyperparameters. Zero fields take the defaults above.
type LossConfig struct {
	Type              LossType `json:"type"`
	Beta              float64  `json:"beta"`
	DesirableWeight   float64  `json:"desirable_weight"`
	UndesirableWeight float64  `json:"undesirable_weight"`
}

// withDefaults fills zero fields.
func (c LossConfig) withDefaults() LossConfig {
	c.Type = cmp.Or(c.Type, LossKTO)
	c.Beta = cmp.Or(c.Beta, DefaultBeta)
	c.DesirableWeight = cmp.Or(c.DesirableWeight, DefaultDesirableWeight)
	c.UndesirableWeight = cmp.Or(c.UndesirableWeight, DefaultUndesirableWeight)
	return c
}

// Validate names the first bad field.
func (c LossConfig) Validate() error {
	switch {
	case c.Type != LossKTO && c.Type != LossAPOZeroUnpaired:
		return fmt.Errorf("%w: loss type %q (want %q or %q)", ErrBadOption, c.Type, LossKTO, LossAPOZeroUnpaired)
	case !(c.Beta > 0):
		return fmt.Errorf("%w: beta %v must be > 0", ErrBadOption, c.Beta)
	case !(c.DesirableWeight > 0):
		return fmt.Errorf("%w: desirable weight %v must be > 0", ErrBadOption, c.DesirableWeight)
	case !(c.UndesirableWeight > 0):
		return fmt.Errorf("%w: undesirable weight %v must be > 0", ErrBadOption, c.UndesirableWeight)
	}
	return nil
}

// ErrBadOption marks an invalid training option.
var ErrBadOption = errors.New("bad option")

// LossInputs are the per-example quantities of one batch, each [B] with B the KTO batch
// size. Slot i holds the batch's example i (segment_example) and its KL pair.
type LossInputs struct {
	Policy, Ref     *graph.Node // summed completion log-probs of the targets
	PolicyKL, RefKL *graph.Node // the same for the KL pairs (mismatched completions)
	Desirable       *graph.Node // 1 desirable, 0 undesirable
	Present         *graph.Node // 1 where slot i holds a target (a short last batch leaves holes)
	KLPresent       *graph.Node // 1 where slot i holds a KL pair
	// Micro, when set, is 1 on the slots of one micro-batch of the KTO batch: the loss is
	// then that micro-batch's share of the batch's loss (its examples' weighted losses over
	// the whole batch's example count), and the shares of a batch's micro-batches add up to
	// its loss. z0 stays the whole batch's (Policy KL, RefKL and KLPresent cover all slots).
	Micro *graph.Node
}

// LossOutputs are scalars: the loss to minimise and the sums behind TRL's logged metrics.
type LossOutputs struct {
	Loss              *graph.Node
	KL                *graph.Node // z0, the clamped KL estimate (0 for apo_zero_unpaired)
	ChosenRewardSum   *graph.Node // Σ β·r over desirable targets
	ChosenCount       *graph.Node
	RejectedRewardSum *graph.Node // Σ β·r over undesirable targets
	RejectedCount     *graph.Node
}

// Build computes TRL's KTOTrainer.kto_loss on one batch (single process, so TRL's gather
// is the identity): r = policy − ref; z0 = max(mean over KL pairs of policyKL − refKL, 0),
// detached; losses = concat(w_D·desirable losses, w_U·undesirable losses); loss = their
// mean. Rewards are β·r, detached. The mean over an empty batch is taken as 0, where TRL's
// nanmean would give NaN.
func (c LossConfig) Build(in LossInputs) LossOutputs {
	c = c.withDefaults()
	dtype := in.Policy.DType()
	g := in.Policy.Graph()
	present := in.Present
	counted := present
	if in.Micro != nil {
		counted = graph.Mul(present, in.Micro)
	}
	desirable := graph.Mul(in.Desirable, counted)
	undesirable := graph.Mul(graph.OneMinus(in.Desirable), counted)

	logRatio := graph.Sub(in.Policy, in.Ref)
	z0 := graph.ScalarZero(g, dtype)
	if c.Type == LossKTO {
		klTerms := graph.Mul(graph.Sub(in.PolicyKL, in.RefKL), in.KLPresent)
		klMean := graph.Div(graph.ReduceAllSum(klTerms), graph.MaxScalar(graph.ReduceAllSum(in.KLPresent), 1))
		z0 = graph.StopGradient(graph.MaxScalar(klMean, 0))
	}

	beta := c.Beta
	var desirableLoss, undesirableLoss *graph.Node
	switch c.Type {
	case LossAPOZeroUnpaired:
		desirableLoss = graph.OneMinus(graph.Sigmoid(graph.MulScalar(logRatio, beta)))
		undesirableLoss = graph.Sigmoid(graph.MulScalar(logRatio, beta))
	default:
		desirableLoss = graph.OneMinus(graph.Sigmoid(graph.MulScalar(graph.Sub(logRatio, z0), beta)))
		undesirableLoss = graph.OneMinus(graph.Sigmoid(graph.MulScalar(graph.Sub(z0, logRatio), beta)))
	}
	weighted := graph.Add(
		graph.Mul(graph.MulScalar(desirableLoss, c.DesirableWeight), desirable),
		graph.Mul(graph.MulScalar(undesirableLoss, c.UndesirableWeight), undesirable))
	loss := graph.Div(graph.ReduceAllSum(weighted), graph.MaxScalar(graph.ReduceAllSum(present), 1))

	rewards := graph.MulScalar(graph.StopGradient(logRatio), beta)
	return LossOutputs{
		Loss:              loss,
		KL:                z0,
		ChosenRewardSum:   graph.ReduceAllSum(graph.Mul(rewards, desirable)),
		ChosenCount:       graph.ReduceAllSum(desirable),
		RejectedRewardSum: graph.ReduceAllSum(graph.Mul(rewards, undesirable)),
		RejectedCount:     graph.ReduceAllSum(undesirable),
	}
}

// perSlotSum adds token log-probs [C] into numSlots per-example sums using slot ids [C]
// (−1 = padding, or a position of the other kind of sequence): OneHot maps −1 to a zero
// row, and one contraction gathers every example across all rows of the batch.
func perSlotSum(tokenLogProbs, slots *graph.Node, numSlots int) *graph.Node {
	oneHot := graph.OneHot(slots, numSlots, tokenLogProbs.DType())
	return dot(tokenLogProbs, []int{0}, nil, oneHot, []int{0}, nil)
}
