package tokenize

import (
	"fmt"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/ktoloader/ktoloader/internal/stablehash"
	"github.com/ktoloader/ktoloader/loader"
)

// Mistral turns loader rows into training examples for Mistral v0.3: Render's segments, each
// control token its id and each text encoded on its own by Tok (never a rendered string, so
// a user's literal "[INST]" stays characters). Every text segment follows a control token
// (the rendering starts with <s>), so none is at offset 0 and none gets the dummy prefix: the
// ids equal Hugging Face tokenizers' encoding of the rendered prompt + completion.
//
// Tok and Opt may be set directly; Example checks them on first use. Example is safe for
// concurrent use once Tok is (a *Tokenizer is).
type Mistral struct {
	Tok TextEncoder
	Opt Options

	once sync.Once
	r    *renderer
	err  error
}

// NewMistral returns a Mistral for tok and opt, or the error that Example would report:
// invalid options, or a tokenizer whose control tokens are not at Mistral v0.3's ids.
func NewMistral(tok TextEncoder, opt Options) (*Mistral, error) {
	m := &Mistral{Tok: tok, Opt: opt}
	return m, m.init()
}

// controlIDer is what a tokenizer offers to check its control tokens (*Tokenizer does).
type controlIDer interface {
	ControlID(name string) (int32, bool)
}

func (m *Mistral) init() error {
	m.once.Do(func() {
		if m.Tok == nil {
			m.err = fmt.Errorf("tokenize: Mistral has no tokenizer")
			return
		}
		if c, ok := m.Tok.(controlIDer); ok {
			for id, name := range controlNames {
				if name == "" {
					continue
				}
				if got, ok := c.ControlID(name); !ok || got != int32(id) {
					m.err = fmt.Errorf("tokenize: tokenizer has %s at id %d (ok=%v), the Mistral v0.3 template needs it at %d", name, got, ok, id)
					return
				}
			}
		}
		m.r, m.err = newRenderer(m.Opt)
	})
	return m.err
}

// Render renders row with m's options (see the package function Render).
func (m *Mistral) Render(row *loader.Row) (*Rendering, error) {
	if err := m.init(); err != nil {
		return nil, err
	}
	return m.r.render(row)
}

// Example renders and tokenizes row. A row the template refuses gives a *TemplateError.
func (m *Mistral) Example(row *loader.Row) (Example, error) {
	r, err := m.Render(row)
	if err != nil {
		return Example{}, err
	}
	return m.Encode(row, r), nil
}

// Encode tokenizes a rendering of row (from m.Render) into an Example.
func (m *Mistral) Encode(row *loader.Row, r *Rendering) Example {
	ex := Example{
		Label:         row.Label,
		Behavior:      row.Behavior,
		Source:        row.Source,
		Group:         GroupOf(r.Messages),
		RepairedIDs:   r.RepairedIDs,
		TextWithTools: r.TextWithTools,

		UnpairedResults: r.UnpairedResults,
	}
	// The spelled texts are made after the ids: not beside a huge text's BPE working set.
	ex.PromptIDs = make([]int32, 0, textBytes(r.Prompt)/3+8)
	ends := make([]int, len(r.Prompt)) // each segment's end in PromptIDs
	for i, s := range r.Prompt {
		ex.PromptIDs = m.appendSegment(ex.PromptIDs, s)
		ends[i] = len(ex.PromptIDs)
	}
	// Made once at its final size: appended id by id it grew past its estimate beside a
	// huge text's ids, old and new arrays both live.
	ex.PromptAssistant = make([]bool, len(ex.PromptIDs))
	start := 0
	for i, end := range ends {
		if r.PromptAssistant[i] {
			for j := start; j < end; j++ {
				ex.PromptAssistant[j] = true
			}
		}
		start = end
	}
	ex.CompletionIDs = m.AppendIDs(make([]int32, 0, textBytes(r.Completion)/3+4), r.Completion)
	ex.Prompt, ex.Completion = Spell(r.Prompt), Spell(r.Completion)
	return ex
}

// textBytes is the length of segs' spelling (control tokens spelled out), as Spell makes it.
func textBytes(segs []Segment) int {
	n := 0
	for _, s := range segs {
		if s.Control >= 0 {
			n += len(ControlName(s.Control))
		} else {
			n += len(s.Text)
		}
	}
	return n
}

// MinTokens is a lower bound on len(m.AppendIDs(nil, segs)) that costs no encoding: one per
// control segment, and ⌈bytes / MaxPieceBytes⌉ per text segment. ok is false when the
// text encoder cannot give the bound (the daulet backend).
func (m *Mistral) MinTokens(segs []Segment) (n int, ok bool) {
	mp, ok := m.Tok.(interface{ MaxPieceBytes() int })
	if !ok {
		return 0, false
	}
	b := mp.MaxPieceBytes()
	for _, s := range segs {
		if s.Control >= 0 {
			n++
		} else {
			n += (len(s.Text) + b - 1) / b
		}
	}
	return n, true
}

// AppendIDs appends the ids of segs to dst.
func (m *Mistral) AppendIDs(dst []int32, segs []Segment) []int32 {
	for _, s := range segs {
		dst = m.appendSegment(dst, s)
	}
	return dst
}

func (m *Mistral) appendSegment(dst []int32, s Segment) []int32 {
	if s.Control >= 0 {
		return append(dst, s.Control)
	}
	return m.Tok.AppendText(dst, s.Text, false)
}

// GroupOf is Example.Group for a conversation: a 64-bit FNV-1a hash over every message before the
// final assistant message except the system message (role, text, tool-call names and
// arguments, tool results), with whitespace runs collapsed to one space and letters
// lower-cased, so that rows asking the same thing in the same words share a group.
func GroupOf(msgs []loader.Message) uint64 {
	h := uint64(stablehash.FNVOffset)
	var buf [utf8.UTFMax]byte
	// add hashes strings.Join(strings.Fields(strings.ToLower(s)), " ") without building it:
	// a tool result of megabytes must not cost three copies and a slice header per word.
	add := func(s string) {
		sep, wrote := false, false
		for _, r := range s {
			r = unicode.ToLower(r)
			if unicode.IsSpace(r) {
				sep = true
				continue
			}
			if sep && wrote {
				h = stablehash.FNVByte(h, ' ')
			}
			sep, wrote = false, true
			if r < utf8.RuneSelf {
				h = stablehash.FNVByte(h, byte(r))
				continue
			}
			for _, b := range utf8.AppendRune(buf[:0], r) {
				h = stablehash.FNVByte(h, b)
			}
		}
		h = stablehash.FNVByte(h, 0xff) // field separator: "ab","c" differs from "a","bc"
	}
	last := len(msgs) - 1
	for last >= 0 && msgs[last].Role != "assistant" {
		last--
	}
	for i := 0; i < last; i++ {
		m := &msgs[i]
		if m.Role == "system" {
			continue
		}
		add(m.Role)
		add(m.Text())
		for _, tc := range m.ToolCalls {
			add(tc.Name)
			add(string(tc.Arguments))
		}
	}
	if h == 0 {
		h = 1
	}
	return h
}
