package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/ktoloader/ktoloader/internal/rowpath"
	"github.com/ktoloader/ktoloader/loader"
	"github.com/ktoloader/ktoloader/tokenize"
)

// renderFlags are the flags of render.
type renderFlags struct {
	in        inputFlags
	tokenizer string
	tools     string
	textTools string
	spm       bool
}

func newRenderCmd() *cobra.Command {
	var f renderFlags
	cmd := &cobra.Command{
		Use:   "render --tokenizer PATH [--input FILE…|-] [--tools FILE] [--assistant-text-with-tools keep|drop] [--spm]",
		Short: "Show how each row is rendered and tokenized: prompt, completion and their ids",
		Long: `render reads rows as prep does and prints, per input row, one JSON line:

  {"source", "messages", "prompt", "completion", "prompt_ids", "completion_ids", "label", "behavior"}

where messages is the conversation as rendered (tool-call arguments as JSON objects, tool-call
ids repaired where the template refuses them), prompt is the Mistral v0.3 chat template over
every message before the final assistant message (it starts with <s>), and completion is the
final assistant message as the template renders it (it ends with </s>). prompt and completion
spell control tokens out for reading; the ids are built segment by segment, so text that a
user typed as "[INST]" is characters, never the control token.

A row that cannot be used prints {"source", "error": {"field", "reason"}} instead, and render
goes on (exit 0) unless --strict.

The tokenizer is --tokenizer (a tokenizer.json or tokenizer.model, or a directory holding one),
else $KTOLOADER_TOKENIZER.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runRender(cmd.OutOrStdout(), &f) },
	}
	f.in.register(cmd)
	cmd.Flags().StringVar(&f.tokenizer, "tokenizer", "", "tokenizer.json, tokenizer.model or a directory holding one (default $KTOLOADER_TOKENIZER)")
	cmd.Flags().StringVar(&f.tools, "tools", "", "JSON file with a tools list, rendered as [AVAILABLE_TOOLS] for rows without their own `tools`")
	cmd.Flags().StringVar(&f.textTools, "assistant-text-with-tools", "keep",
		`assistant messages with text and tool calls: "keep" renders " " + text before [TOOL_CALLS], "drop" renders the template exactly (text dropped)`)
	cmd.Flags().BoolVar(&f.spm, "spm", false, "SentencePiece mode of the tokenizer (as spm_encode / mistral_common); the ids of a rendering do not change, since no text segment is at offset 0")
	return cmd
}

// renderLine is one output line for a rendered row.
type renderLine struct {
	Source        string          `json:"source"`
	Messages      []renderMessage `json:"messages"`
	Prompt        string          `json:"prompt"`
	Completion    string          `json:"completion"`
	PromptIDs     []int32         `json:"prompt_ids"`
	CompletionIDs []int32         `json:"completion_ids"`
	Label         bool            `json:"label"`
	Behavior      string          `json:"behavior"`
}

// renderErrorLine is one output line for a row that cannot be used.
type renderErrorLine struct {
	Source string `json:"source"`
	Error  struct {
		Field  string `json:"field"`
		Reason string `json:"reason"`
	} `json:"error"`
}

// renderMessage is a message in OpenAI form, arguments as an object.
type renderMessage struct {
	Role       string           `json:"role"`
	Content    *string          `json:"content"`
	ToolCalls  []renderToolCall `json:"tool_calls,omitempty"`
	ToolCallID string           `json:"tool_call_id,omitempty"`
	Name       string           `json:"name,omitempty"`
}

type renderToolCall struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string          `json:"name"`
		Arguments json.RawMessage `json:"arguments"`
	} `json:"function"`
}

func runRender(stdout io.Writer, f *renderFlags) error {
	opt := tokenize.Options{AssistantTextWithTools: f.textTools}
	if f.textTools != "keep" && f.textTools != "drop" {
		return usagef("--assistant-text-with-tools must be keep or drop, not %q", f.textTools)
	}
	if f.tools != "" {
		data, err := os.ReadFile(f.tools)
		if err != nil {
			return fmt.Errorf("--tools: %w", err)
		}
		opt.Tools = data
		if err := opt.Validate(); err != nil {
			return usagef("--tools %s: want a JSON list of tools: %v", f.tools, err)
		}
	}
	path := f.tokenizer
	if path == "" {
		path = os.Getenv("KTOLOADER_TOKENIZER")
	}
	if path == "" {
		return usagef("render needs --tokenizer PATH (or $KTOLOADER_TOKENIZER)")
	}
	tok, err := tokenize.Load(path)
	if err != nil {
		return fmt.Errorf("--tokenizer: %w", err)
	}
	tok.SetSPM(f.spm)
	m, err := tokenize.NewMistral(tok, opt)
	if err != nil {
		return err
	}

	w := bufio.NewWriterSize(stdout, 1<<16)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	writeErr := func(re *loader.RowError) error {
		var l renderErrorLine
		l.Source, l.Error.Field, l.Error.Reason = re.Source.String(), re.Field, re.Reason()
		return enc.Encode(&l)
	}
	lcfg, err := f.in.config()
	if err != nil {
		return err
	}
	rp, err := rowpath.New(rowpath.Config{Loader: lcfg, Mistral: m})
	if err != nil {
		return err
	}
	err = f.in.eachRow(
		func(row *loader.Row) error {
			res := rp.Row(row, nil)
			if re := res.Reject; re != nil {
				if werr := writeErr(re); werr != nil {
					return werr
				}
				if f.in.strict {
					return fmt.Errorf("%w: %v", errStrict, re)
				}
				return nil
			}
			ex, r := &res.Example, res.Rendering
			return enc.Encode(&renderLine{
				Source:        ex.Source.String(),
				Messages:      renderMessages(r.Messages),
				Prompt:        ex.Prompt,
				Completion:    ex.Completion,
				PromptIDs:     ex.PromptIDs,
				CompletionIDs: ex.CompletionIDs,
				Label:         ex.Label,
				Behavior:      ex.Behavior,
			})
		},
		writeErr,
	)
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	return err
}

func renderMessages(msgs []loader.Message) []renderMessage {
	out := make([]renderMessage, len(msgs))
	for i, m := range msgs {
		out[i] = renderMessage{Role: m.Role, Content: m.Content, ToolCallID: m.ToolCallID, Name: m.Name}
		for _, c := range m.ToolCalls {
			tc := renderToolCall{ID: c.ID, Type: c.Type}
			if tc.Type == "" {
				tc.Type = "function"
			}
			tc.Function.Name, tc.Function.Arguments = c.Name, c.Arguments
			out[i].ToolCalls = append(out[i].ToolCalls, tc)
		}
	}
	return out
}
