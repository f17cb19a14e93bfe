// Package tokenize turns a loader.Row into token ids for Mistral v0.3, as a pipeline:
//
//	template (template.go)  row → segments: control-token ids, and plain text that can never
//	                        become a control token (Render, ApplyTemplate)
//	BPE (package bpe)       text → ids: the base tokenizer, a pure-Go SentencePiece BPE that
//	                        reproduces Hugging Face tokenizers and SentencePiece token for token
//	assembly (build.go)     segments → ids, and the prompt/completion split that KTO and SFT
//	                        train on (Mistral.Example)
//
// Resolve (resolve.go) finds the tokenizer files: a path, $KTOLOADER_TOKENIZER, the Hugging
// Face cache or a download through internal/hub. Tokenizer, Load and the loaders' errors are
// bpe's, under the names tokenize has always had (base.go).
//
// It may import loader (the rows), tokenize/bpe, internal/hub (to find a tokenizer in the
// Hugging Face cache or download one), internal/pyjson (tools lists read and written as
// Python does), internal/jsonstr, internal/stablehash and testdata (the demo tokenizer);
// nothing above it.
package tokenize

import "github.com/ktoloader/ktoloader/loader"

// Segment is one piece of a rendered conversation: either a control token (Control >= 0,
// Text empty) or plain text (Control == -1) that is tokenized as characters only.
type Segment struct {
	Control int32
	Text    string
}

// Example is one training example: the prompt (every message before the final assistant
// message, rendered by the template) and the completion (the final assistant message).
// PromptIDs starts with BOS; CompletionIDs ends with EOS.
type Example struct {
	PromptIDs     []int32
	CompletionIDs []int32
	// PromptAssistant marks, per prompt token, the tokens of earlier assistant turns (their
	// text, tool calls and </s>): what --sft-loss=all-assistant also trains on.
	PromptAssistant []bool

	Prompt     string // rendered text, control tokens spelled out (for reading only)
	Completion string

	Label    bool
	Behavior string
	Source   loader.Source

	// Group names the request this example answers, for the group-aware split: a hash of
	// the conversation before the final assistant message WITHOUT the system message, with
	// whitespace runs collapsed and letters lower-cased. The system message is left out
	// because real data (Nexus) puts per-row session and workspace ids there: grouping on the
	// whole prompt let the desirable and undesirable answers to one request land on both
	// sides of the split. 0 means unknown (kto then hashes the prompt).
	Group uint64

	RepairedIDs   int  // tool-call ids replaced because the template refuses them
	TextWithTools bool // an assistant message held both text and tool calls
	// UnpairedResults counts tool messages whose tool_call_id no earlier call carries.
	UnpairedResults int
}
