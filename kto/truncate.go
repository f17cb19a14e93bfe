package kto

import (
	"fmt"

	"github.com/ktoloader/ktoloader/tokenize"
)

// Truncate makes an example fit in MaxLen tokens (prompt + completion) or says why it cannot,
// and returns how many prompt tokens it removed. Call it on every example before the split.
//
// With TruncateReject (the default) an example over MaxLen is an error: a *LengthError
// (errors.Is ErrTooLong, reason too_long) holding its length.
//
// With TruncateKeepEnd the prompt loses tokens from the left, just enough to fit, and keeps
// its first token, BOS by tokenize.Example's contract: TRL's keep_end keeps the last prompt
// tokens and then puts BOS back in front (trl/trainer/kto_trainer.py, _process_tokens:
// all_tokens[k] = all_tokens[k][-kwargs["max_prompt_length"]:], then "add BOS, which affects
// both prompt and the full completion"), and Mistral never sees a sequence without <s>.
// The completion is never cut: it is what KTO judges, and a label on a cut answer would lie.
// (TRL instead cuts the prompt to a fixed max_prompt_length and then the completion to
// max_length − max_prompt_length.) A completion that cannot fit beside BOS is rejected under
// either policy. PromptAssistant is cut alongside PromptIDs. The Prompt text is left whole:
// it stays the example's name (GroupKey) and is for reading only.
//
// ErrBadExample reports an empty completion (it always holds at least EOS) or a
// PromptAssistant whose length is neither 0 nor len(PromptIDs).
func Truncate(ex *tokenize.Example, cfg Config) (trimmed int, err error) {
	cfg, err = cfg.WithDefaults()
	if err != nil {
		return 0, err
	}
	if err := checkExample(ex); err != nil {
		return 0, err
	}
	p, c := len(ex.PromptIDs), len(ex.CompletionIDs)
	if p+c <= cfg.MaxLen {
		return 0, nil
	}
	if cfg.Truncate == TruncateReject {
		return 0, &LengthError{Len: p + c, MaxLen: cfg.MaxLen}
	}
	keep := cfg.MaxLen - c // prompt tokens that fit, BOS included
	if p == 0 || keep < 1 {
		return 0, &LengthError{Len: c, MaxLen: cfg.MaxLen - 1, Completion: true}
	}
	cut := p - keep
	ex.PromptIDs = cutAfterFirst(ex.PromptIDs, cut)
	if len(ex.PromptAssistant) != 0 {
		ex.PromptAssistant = cutAfterFirst(ex.PromptAssistant, cut)
	}
	return cut, nil
}

// CheckMinLength rejects, before tokenizing, an example that Truncate would reject whatever
// its exact length: minPrompt and minCompletion are lower bounds on its token counts
// (tokenize.Mistral.MinTokens). A row of megabytes then costs no encoding. It never rejects
// an example that fits, since the bounds are never above the counts.
func CheckMinLength(minPrompt, minCompletion int, cfg Config) error {
	cfg, err := cfg.WithDefaults()
	if err != nil {
		return err
	}
	if cfg.Truncate == TruncateReject && minPrompt+minCompletion > cfg.MaxLen {
		return &LengthError{Len: minPrompt + minCompletion, MaxLen: cfg.MaxLen, AtLeast: true}
	}
	if minCompletion > cfg.MaxLen-1 {
		return &LengthError{Len: minCompletion, MaxLen: cfg.MaxLen - 1, Completion: true, AtLeast: true}
	}
	return nil
}

// cutAfterFirst removes n elements after the first one, into a new slice: the caller's
// backing array may be shared with other examples.
func cutAfterFirst[T any](xs []T, n int) []T {
	out := make([]T, 0, len(xs)-n)
	out = append(out, xs[0])
	return append(out, xs[1+n:]...)
}

// checkExample enforces the parts of tokenize.Example's contract that this package relies on.
func checkExample(ex *tokenize.Example) error {
	if len(ex.CompletionIDs) == 0 {
		return fmt.Errorf("%s: %w: empty completion", ex.Source, ErrBadExample)
	}
	if m := len(ex.PromptAssistant); m != 0 && m != len(ex.PromptIDs) {
		return fmt.Errorf("%s: %w: PromptAssistant has %d entries for %d prompt ids", ex.Source, ErrBadExample, m, len(ex.PromptIDs))
	}
	return nil
}
