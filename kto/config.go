package kto

import (
	"cmp"
	"math"
)

// Defaults applied to zero Config fields.
const (
	DefaultBatchSize = 8
	DefaultMaxLen    = 2048
	// DefaultSFTWindow bounds SFT packing memory: best-fit-decreasing runs over windows of this
	// many sequences, so about 10k × the mean length × 4 bytes of ids are held at once.
	// Measured on 50k chat-like lengths (32 + exponential, mean ≈ 630, cut at 2048) into 2048:
	// windows of 100 fill 97.9% of row capacity, 1k 99.76%, 10k 99.95%, all 50k 99.97%.
	DefaultSFTWindow = 10000
	// DefaultSeed is prep's --seed. Config.Seed has no default: 0 is a seed like any other.
	DefaultSeed = 42
)

// Truncation policies (Config.Truncate, --truncate).
const (
	TruncateReject  = "reject"   // an example over MaxLen is rejected (reason too_long)
	TruncateKeepEnd = "keep-end" // the prompt loses tokens after BOS, from the left
)

// SFT loss selections (Config.SFTLoss, --sft-loss).
const (
	SFTLossCompletion   = "completion"    // labels on the final assistant message only
	SFTLossAllAssistant = "all-assistant" // also on earlier assistant turns (PromptAssistant)
)

// IgnoreIndex is the label of tokens that take no loss in sft/ (PyTorch's cross-entropy
// ignore_index, which TRL and transformers use).
const IgnoreIndex = -100

// Config holds the knobs of this package. A zero field means its default, so Config{} is
// valid; Validate names the first bad field.
type Config struct {
	// BatchSize is the KTO batch: consecutive rows of kto/ that TRL's per_device_train_batch_size
	// must equal. Default 8; at least 2, as TRL refuses a batch of 1 (the KL pair would be the
	// example itself: "Actual (not effective) batch size must be > 1", KTOTrainer.__init__).
	BatchSize int
	// MaxLen is the packed row length and the limit on prompt+completion. Default 2048.
	MaxLen int
	// TestFrac is the fraction of each behavior×label stratum held out, by whole prompt
	// groups. Default 0: no hold-out. A converter should not silently withhold training data,
	// and on small inputs (the embedded demo) a grouped 5% split is mostly noise; the user
	// asks for a test split with --test-frac. Must be in [0, 1).
	TestFrac float64
	// Seed drives the split, the example order within each label, and the batch order.
	Seed int64
	// Truncate is TruncateReject (default) or TruncateKeepEnd.
	Truncate string
	// SFTLoss is SFTLossCompletion (default) or SFTLossAllAssistant.
	SFTLoss string
	// DropLast drops the examples that would form the last, partial KTO batch (from the more
	// numerous label, to help balance). By default the partial batch is kept, last, as
	// TRL's DataLoader keeps it (dataloader_drop_last=False).
	DropLast bool
	// PadID is the input id written on padding positions. Default 0 (<unk> in Mistral's
	// vocabulary). Padding takes no part in training either way (segment 0, loss_mask 0,
	// label -100); 0 was chosen over EOS (2) so that a padded row never looks like it ends
	// in extra </s> tokens to someone reading ids.
	PadID int32
	// SFTWindow is the number of sequences per best-fit-decreasing window in sft/. Default
	// DefaultSFTWindow.
	SFTWindow int
}

// WithDefaults returns c with its zero fields set to their defaults, and Validate's verdict:
// what the pipeline records as the configuration actually used.
func (c Config) WithDefaults() (Config, error) {
	c.BatchSize = cmp.Or(c.BatchSize, DefaultBatchSize)
	c.MaxLen = cmp.Or(c.MaxLen, DefaultMaxLen)
	c.Truncate = cmp.Or(c.Truncate, TruncateReject)
	c.SFTLoss = cmp.Or(c.SFTLoss, SFTLossCompletion)
	c.SFTWindow = cmp.Or(c.SFTWindow, DefaultSFTWindow)
	return c, c.validate()
}

// Validate reports the first field out of range as a *ConfigError (errors.Is
// ErrInvalidConfig). Zero fields are valid: they mean the default.
func (c Config) Validate() error {
	_, err := c.WithDefaults()
	return err
}

func (c Config) validate() error {
	switch {
	case c.BatchSize < 2:
		return &ConfigError{"BatchSize", "--kto-batch-size", c.BatchSize, "must be at least 2: TRL's KL pairs need another example in the batch"}
	case c.MaxLen < 2:
		return &ConfigError{"MaxLen", "--max-len", c.MaxLen, "must be at least 2 (BOS and EOS)"}
	case c.MaxLen > math.MaxInt32:
		return &ConfigError{"MaxLen", "--max-len", c.MaxLen, "must fit in int32 positions"}
	case math.IsNaN(c.TestFrac) || c.TestFrac < 0 || c.TestFrac >= 1:
		return &ConfigError{"TestFrac", "--test-frac", c.TestFrac, "must be in [0, 1)"}
	case c.Truncate != TruncateReject && c.Truncate != TruncateKeepEnd:
		return &ConfigError{"Truncate", "--truncate", c.Truncate, `must be "reject" or "keep-end"`}
	case c.SFTLoss != SFTLossCompletion && c.SFTLoss != SFTLossAllAssistant:
		return &ConfigError{"SFTLoss", "--sft-loss", c.SFTLoss, `must be "completion" or "all-assistant"`}
	case c.PadID < 0:
		return &ConfigError{"PadID", "", c.PadID, "must be a token id (>= 0)"}
	case c.SFTWindow < 1:
		return &ConfigError{"SFTWindow", "", c.SFTWindow, "must be at least 1"}
	}
	return nil
}
