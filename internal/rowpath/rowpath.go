// Package rowpath is the one path of an input row: parse → render → size check → encode →
// truncate. prep (internal/pipeline), render and validate (cmd/ktoloader) all call Path, so
// they cannot disagree on which rows are usable, nor on the reason and field of a reject.
// Without a tokenizer (validate) the path stops after rendering: every check but too_long.
//
// It may import loader, tokenize and kto; internal/pipeline and cmd/ktoloader import it.
package rowpath

import (
	"errors"

	"github.com/ktoloader/ktoloader/kto"
	"github.com/ktoloader/ktoloader/loader"
	"github.com/ktoloader/ktoloader/tokenize"
)

// Path holds what is fixed for a run. Build it with New; safe for concurrent use.
type Path struct {
	loader  loader.Config
	render  *tokenize.Renderer // no tokenizer: validate
	mistral *tokenize.Mistral  // with a tokenizer: render and prep
	kto     *kto.Config        // nil: no size check and no truncation (render)
	lean    bool
}

// Config says how far the path goes: Mistral nil stops after the template (no ids, no
// too_long); KTO nil encodes but neither checks the size nor truncates.
type Config struct {
	Loader  loader.Config
	Render  tokenize.Options // the template's options when Mistral is nil (Mistral has its own)
	Mistral *tokenize.Mistral
	KTO     *kto.Config
	// Lean (prep) drops each row's text once it is no longer needed: the messages (in
	// Result.Row and Result.Rendering) before tokenizing, the rendered segments after, so
	// that a 50 MB tool result is not held three times beside the BPE's working set.
	// Result.Row.Messages, Result.Rendering.Messages, .Prompt and .Completion are then nil.
	Lean bool
}

// New checks cfg's rendering options.
func New(cfg Config) (*Path, error) {
	p := &Path{loader: cfg.Loader, mistral: cfg.Mistral, kto: cfg.KTO, lean: cfg.Lean}
	if cfg.Mistral == nil {
		r, err := tokenize.NewRenderer(cfg.Render)
		if err != nil {
			return nil, err
		}
		p.render = r
	}
	return p, nil
}

// Encodes reports whether the path tokenizes (and so checks too_long where a KTO config is set).
func (p *Path) Encodes() bool { return p.mistral != nil }

// Result is one row's outcome. Exactly one of Reject and Skipped holds, or neither (a usable
// row: Rendering, and Example when the path encodes).
type Result struct {
	Row       loader.Row          // the parsed row (zero when parsing failed)
	Rendering *tokenize.Rendering // nil when the row was refused before or by the template
	Example   tokenize.Example    // when the path encodes
	Trimmed   int                 // prompt tokens removed by --truncate keep-end
	Reject    *loader.RowError    // why the row is not used, with file, line, field and raw line
	Skipped   bool                // keep refused the rendering: the row is another run's
}

// Line runs a raw input record through the path. keep (nil: keep all) sees the rendering
// before any tokenizing: false skips the row (sharded runs).
func (p *Path) Line(data []byte, file string, line int64, keep func(*tokenize.Rendering) bool) Result {
	return p.line(loader.ParseRow, data, file, line, keep)
}

// LineOwned is Line for a record the caller hands over (loader.Reader.ReadOwnedRecord): the
// row keeps data as its Raw instead of a copy, so a huge line is not held twice.
func (p *Path) LineOwned(data []byte, file string, line int64, keep func(*tokenize.Rendering) bool) Result {
	return p.line(loader.ParseOwnedRow, data, file, line, keep)
}

func (p *Path) line(parse func([]byte, string, int64, loader.Config) (loader.Row, error), data []byte, file string, line int64, keep func(*tokenize.Rendering) bool) Result {
	row, err := parse(data, file, line, p.loader)
	if err != nil {
		var re *loader.RowError
		if !errors.As(err, &re) {
			re = &loader.RowError{Source: loader.Source{File: file, Line: line}, Err: err}
		}
		return Result{Reject: re}
	}
	return p.Row(&row, keep)
}

// Row runs a parsed row through the rest of the path.
func (p *Path) Row(row *loader.Row, keep func(*tokenize.Rendering) bool) Result {
	res := Result{Row: *row}
	var rd *tokenize.Rendering
	var err error
	if p.mistral != nil {
		rd, err = p.mistral.Render(row)
	} else {
		rd, err = p.render.Render(row)
	}
	if err != nil {
		res.Reject = rowError(row, err)
		return res
	}
	res.Rendering = rd
	if keep != nil && !keep(rd) {
		res.Skipped = true
		return res
	}
	if p.mistral == nil {
		return res
	}
	if p.kto != nil {
		// A row far over max_len (megabytes of tool calls) is rejected on a bound from its
		// size, before the tokenizer spends seconds and its ids hundreds of MB on it.
		if pMin, ok := p.mistral.MinTokens(rd.Prompt); ok {
			cMin, _ := p.mistral.MinTokens(rd.Completion)
			if err := kto.CheckMinLength(pMin, cMin, *p.kto); err != nil {
				res.Reject = rowError(row, err)
				return res
			}
		}
	}
	var ex tokenize.Example
	if p.lean {
		// Encode needs the messages only for the group; the segments hold the text.
		group := tokenize.GroupOf(rd.Messages)
		row.Messages, res.Row.Messages, rd.Messages = nil, nil, nil
		ex = p.mistral.Encode(row, rd)
		ex.Group = group
		rd.Prompt, rd.Completion = nil, nil
	} else {
		ex = p.mistral.Encode(row, rd)
	}
	if p.kto != nil {
		trimmed, err := kto.Truncate(&ex, *p.kto)
		if err != nil {
			res.Reject = rowError(row, err)
			return res
		}
		res.Trimmed = trimmed
	}
	res.Example = ex
	return res
}

// rowError places a later stage's error at its row: a template error's field, a length
// error's length in Detail (for people and the report).
func rowError(row *loader.Row, err error) *loader.RowError {
	re := &loader.RowError{Source: row.Source, Err: err, Raw: row.Raw}
	var le *kto.LengthError
	if errors.As(err, &le) {
		re.Detail = le.Error()
	}
	var te *tokenize.TemplateError
	if errors.As(err, &te) {
		re.Field = te.Field
	}
	return re
}
