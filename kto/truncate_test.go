package kto

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ktoloader/ktoloader/loader"
	"github.com/ktoloader/ktoloader/tokenize"
)

// trlKeepEnd is TRL's keep_end on a prompt (trl/trainer/kto_trainer.py, _process_tokens):
// keep the last n tokens, then put BOS in front unless it is already there.
func trlKeepEnd(prompt []int32, n int) []int32 {
	kept := prompt[len(prompt)-n:]
	if len(kept) == 0 || kept[0] != bos {
		kept = append([]int32{bos}, kept...)
	}
	return kept
}

func TestTruncate(t *testing.T) {
	mask := []bool{false, true, false, true, true, false}
	cases := []struct {
		name        string
		pLen, cLen  int
		maxLen      int
		policy      string
		wantTrimmed int
		wantErr     error
		completion  bool // the LengthError is about the completion alone
		errLen      int
	}{
		{name: "fits", pLen: 6, cLen: 2, maxLen: 8, policy: TruncateReject},
		{name: "fits keep-end", pLen: 6, cLen: 2, maxLen: 8, policy: TruncateKeepEnd},
		{name: "reject", pLen: 6, cLen: 3, maxLen: 8, policy: TruncateReject, wantErr: ErrTooLong, errLen: 9},
		{name: "default rejects", pLen: 6, cLen: 3, maxLen: 8, policy: "", wantErr: ErrTooLong, errLen: 9},
		{name: "keep-end trims", pLen: 6, cLen: 3, maxLen: 6, policy: TruncateKeepEnd, wantTrimmed: 3},
		{name: "keep-end to BOS", pLen: 6, cLen: 5, maxLen: 6, policy: TruncateKeepEnd, wantTrimmed: 5},
		{name: "completion too long", pLen: 6, cLen: 6, maxLen: 6, policy: TruncateKeepEnd, wantErr: ErrTooLong, completion: true, errLen: 6},
		{name: "completion too long rejects", pLen: 6, cLen: 7, maxLen: 6, policy: TruncateReject, wantErr: ErrTooLong, errLen: 13},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ex := synth(0, 0, tc.pLen, tc.cLen, true, "b")
			ex.PromptAssistant = slices.Clone(mask[:tc.pLen])
			orig := ex
			origPrompt := slices.Clone(ex.PromptIDs)
			trimmed, err := Truncate(&ex, Config{MaxLen: tc.maxLen, Truncate: tc.policy})
			if tc.wantErr != nil {
				var le *LengthError
				if !errors.Is(err, tc.wantErr) || !errors.As(err, &le) {
					t.Fatalf("error %v, want %v", err, tc.wantErr)
				}
				if le.Len != tc.errLen || le.Completion != tc.completion {
					t.Errorf("LengthError %+v, want Len %d, Completion %v", le, tc.errLen, tc.completion)
				}
				if r := loader.Reason(err); r != "too_long" {
					t.Errorf("reason %q, want too_long", r)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if trimmed != tc.wantTrimmed {
				t.Errorf("trimmed %d, want %d", trimmed, tc.wantTrimmed)
			}
			if len(ex.PromptIDs)+len(ex.CompletionIDs) > tc.maxLen {
				t.Fatalf("%d tokens after Truncate, MaxLen %d", len(ex.PromptIDs)+len(ex.CompletionIDs), tc.maxLen)
			}
			if !slices.Equal(ex.CompletionIDs, orig.CompletionIDs) {
				t.Error("completion changed")
			}
			if !slices.Equal(orig.PromptIDs, origPrompt) {
				t.Error("Truncate wrote into the caller's prompt array")
			}
			if trimmed > 0 {
				// TRL keeps the last (room − BOS) tokens and puts BOS back.
				want := trlKeepEnd(origPrompt, tc.maxLen-tc.cLen-1)
				if !slices.Equal(ex.PromptIDs, want) {
					t.Errorf("prompt %v, want %v", ex.PromptIDs, want)
				}
				wantMask := append([]bool{mask[0]}, mask[tc.pLen-(tc.maxLen-tc.cLen-1):tc.pLen]...)
				if !slices.Equal(ex.PromptAssistant, wantMask) {
					t.Errorf("PromptAssistant %v, want %v", ex.PromptAssistant, wantMask)
				}
			}
		})
	}
}

// TestTruncateKeepEndRandom compares keep-end with TRL's keep_end on random lengths.
func TestTruncateKeepEndRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	for trial := 0; trial < 1000; trial++ {
		maxLen := 2 + r.IntN(60)
		ex := synth(trial, trial, 2+r.IntN(80), 1+r.IntN(maxLen-1), true, "b")
		orig := slices.Clone(ex.PromptIDs)
		total := len(ex.PromptIDs) + len(ex.CompletionIDs)
		_, err := Truncate(&ex, Config{MaxLen: maxLen, Truncate: TruncateKeepEnd})
		if err != nil {
			t.Fatalf("keep-end refused a completion of %d with MaxLen %d: %v", len(ex.CompletionIDs), maxLen, err)
		}
		want := orig
		if total > maxLen {
			want = trlKeepEnd(orig, maxLen-len(ex.CompletionIDs)-1)
		}
		if !slices.Equal(ex.PromptIDs, want) {
			t.Fatalf("prompt %v, TRL keep_end %v", ex.PromptIDs, want)
		}
	}
}

func TestTruncateBadExample(t *testing.T) {
	ex := synth(0, 0, 5, 2, true, "b")
	ex.PromptAssistant = []bool{true}
	if _, err := Truncate(&ex, Config{}); !errors.Is(err, ErrBadExample) {
		t.Errorf("misaligned mask: error %v, want ErrBadExample", err)
	}
	ex = synth(0, 0, 5, 0, true, "b")
	if _, err := Truncate(&ex, Config{}); !errors.Is(err, ErrBadExample) {
		t.Errorf("empty completion: error %v, want ErrBadExample", err)
	}
}

// TestCheckMinLengthNeverRejectsAFit: for every prompt and completion length around the
// limit and every lower bound at or below them, CheckMinLength rejects only examples that
// Truncate rejects too (under both policies), and rejects those whose bounds alone prove it.
func TestCheckMinLengthNeverRejectsAFit(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, policy := range []string{TruncateReject, TruncateKeepEnd} {
		cfg := Config{MaxLen: 64, Truncate: policy}
		for p := 1; p <= 130; p += 3 {
			for c := 1; c <= 130; c += 3 {
				for range 4 {
					pb, cb := rng.IntN(p+1), rng.IntN(c+1)
					if rng.IntN(4) == 0 {
						pb, cb = p, c // exact bounds
					}
					early := CheckMinLength(pb, cb, cfg)
					ex := tokenize.Example{PromptIDs: make([]int32, p), CompletionIDs: make([]int32, c)}
					_, late := Truncate(&ex, cfg)
					if early != nil && late == nil {
						t.Fatalf("%s: p=%d c=%d bounds %d %d: rejected early (%v) but fits", policy, p, c, pb, cb, early)
					}
					if early != nil && !errors.Is(early, ErrTooLong) {
						t.Fatalf("early error %v is not ErrTooLong", early)
					}
					if pb == p && cb == c && (early == nil) != (late == nil) {
						t.Fatalf("%s: p=%d c=%d exact bounds: early %v, Truncate %v", policy, p, c, early, late)
					}
				}
			}
		}
	}
}
