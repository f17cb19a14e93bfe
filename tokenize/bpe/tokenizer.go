// Package bpe is the base tokenizer of package tokenize (the level torchtune calls the base
// tokenizer): text in, ids out, and back, with no chat template and no control tokens from
// text. It loads Mistral's tokenizer.model (SentencePiece protobuf, spmodel.go) and
// tokenizer.json (Hugging Face, hfjson.go) into one model (model.go) and encodes with a
// merge-rank BPE (bpe.go, bpe_large.go) that reproduces SentencePiece and Hugging Face
// tokenizers token for token; daulet.go (build tag daulet) wraps the Rust tokenizers library
// itself, as the reference the tests compare with.
//
// It imports only the standard library and protowire; tokenize imports it.
package bpe

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// Tokenizer is the Mistral v0.3 ("v3", 32768 pieces) SentencePiece BPE tokenizer in pure Go,
// loaded from tokenizer.model or tokenizer.json. It reproduces two references token for token:
//
//   - Hugging Face tokenizers on tokenizer.json (the default, what transformers and TRL train
//     with): "▁" is prepended only to text at offset 0 that does not already start with a
//     space or "▁" (Metaspace prepend_scheme "first").
//   - SentencePiece on tokenizer.model (SetSPM(true), what mistral_common and spm_encode do):
//     "▁" is always prepended to the text.
//
// No normalization happens (spaces become "▁", nothing else changes); characters that are not
// pieces fall back to their UTF-8 bytes <0xNN> (id 771+byte for Mistral); control tokens
// ([INST], </s>, ...) are never produced from text, except by Encode with ParseSpecial.
// Invalid UTF-8 bytes are encoded as U+FFFD, as SentencePiece's normalizer does.
//
// Encode and AppendText are safe for concurrent use; SetSPM is not (call it before sharing).
type Tokenizer struct {
	m    *model
	name string
	sum  string
	spm  atomic.Bool
	pool *sync.Pool // of *scratch

	maxPieceOnce sync.Once
	maxPiece     int
}

// TextEncoder is the part of a tokenizer that renders plain text: *Tokenizer and, with the
// build tag daulet, the Hugging Face tokenizers binding (NewDaulet) implement it.
type TextEncoder interface {
	// AppendText appends the ids of text (characters only, never control tokens). first
	// says that text starts the encoded string, so the dummy-prefix rule applies.
	AppendText(dst []int32, text string, first bool) []int32
	// Decode turns ids back into text.
	Decode(ids []int32) string
}

var _ TextEncoder = (*Tokenizer)(nil)

// EncodeOptions says what Encode adds around the text.
type EncodeOptions struct {
	// BOS prepends <s>, as tokenizers' post-processor does (it never appends </s>).
	BOS bool
	// ParseSpecial turns control-token spellings in the text ("[INST]", "</s>", "<unk>",
	// "[control_8]", ...) into their ids, as tokenizers does with its added tokens: they are
	// cut out first (leftmost, longest), and the text between them is encoded on its own, the
	// pieces after the first control token counting as not at offset 0 (no dummy prefix).
	ParseSpecial bool
}

// DirFiles are the file names Load (and tokenize.Resolve) look for in a directory, in order of preference. tokenizer.json comes first:
// the training contract is Hugging Face tokenizers on it (DESIGN.md); for Mistral v0.3 both
// files give identical ids (tested), so the choice only matters for other tokenizers.
var DirFiles = []string{"tokenizer.json", "tokenizer.model"}

// Load reads a tokenizer.json or tokenizer.model file (told apart by content, so
// tokenizer.model.v3 works too), or a directory holding one (tokenizer.json preferred).
func Load(path string) (*Tokenizer, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	file := path
	if st.IsDir() {
		file = ""
		for _, name := range DirFiles {
			p := filepath.Join(path, name)
			if fst, err := os.Stat(p); err == nil && !fst.IsDir() {
				file = p
				break
			}
		}
		if file == "" {
			return nil, &LoadError{Path: path, Err: ErrNoTokenizerFile}
		}
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var t *Tokenizer
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	switch {
	case len(trimmed) == 0:
		// An empty file parses as an empty ModelProto, whose defaults name a model type this
		// BPE does not implement: say what is wrong instead.
		return nil, &LoadError{Path: file, Reason: fmt.Sprintf("the file is empty (%d bytes)", len(data)), Err: ErrMalformedTokenizer}
	case trimmed[0] == '{' || strings.EqualFold(filepath.Ext(file), ".json"):
		// A .json name is Hugging Face's format whatever it holds: its JSON error says more
		// than a protobuf decoder's guess at non-JSON text.
		t, err = newTokenizer(data, parseHFJSON)
	default:
		t, err = newTokenizer(data, parseModelProto)
	}
	if err != nil {
		var le *LoadError
		if errors.As(err, &le) {
			le.Path = file
		}
		return nil, err
	}
	t.name = file
	return t, nil
}

// LoadModelProto reads a serialized SentencePiece model (tokenizer.model).
func LoadModelProto(r io.Reader) (*Tokenizer, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	return newTokenizer(data, parseModelProto)
}

// LoadHFJSON reads a Hugging Face tokenizer.json.
func LoadHFJSON(r io.Reader) (*Tokenizer, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	return newTokenizer(data, parseHFJSON)
}

func newTokenizer(data []byte, parse func([]byte) (*model, error)) (*Tokenizer, error) {
	m, err := parse(data)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	t := &Tokenizer{m: m, sum: hex.EncodeToString(sum[:])}
	t.resetCaches()
	return t, nil
}

// resetCaches drops every scratch and with it the chunk caches (for cold benchmarks).
func (t *Tokenizer) resetCaches() {
	t.pool = &sync.Pool{New: func() any { return newScratch() }}
}

// SetSPM switches SentencePiece mode on (always a dummy prefix, SentencePiece decoding) or off
// (Hugging Face tokenizers, the default). Not safe while encoding from other goroutines.
func (t *Tokenizer) SetSPM(on bool) { t.spm.Store(on) }

// SPM reports whether SentencePiece mode is on.
func (t *Tokenizer) SPM() bool { return t.spm.Load() }

// AppendText appends the ids of text to dst. Control-token spellings in text stay characters.
// first says that text is at offset 0 of the encoded string: then the dummy prefix "▁" is
// prepended (in SentencePiece mode always; by default only when text does not start with a
// space or "▁", as tokenizers' Metaspace does). With first false no prefix is added. Empty
// text adds nothing.
func (t *Tokenizer) AppendText(dst []int32, text string, first bool) []int32 {
	if text == "" {
		return dst
	}
	prefix := first && t.m.addDummyPrefix && (t.spm.Load() || !startsWithSpace(text))
	s := t.pool.Get().(*scratch)
	dst = s.appendText(t.m, dst, text, prefix)
	s.shrink()
	t.pool.Put(s)
	return dst
}

func startsWithSpace(text string) bool {
	return text[0] == ' ' || strings.HasPrefix(text, metaSpace)
}

// Encode returns the ids of text as a whole string (offset 0).
func (t *Tokenizer) Encode(text string, opt EncodeOptions) []int32 {
	dst := make([]int32, 0, len(text)/3+2)
	if opt.BOS {
		dst = append(dst, t.m.bos)
	}
	if !opt.ParseSpecial {
		return t.AppendText(dst, text, true)
	}
	first := true
	for text != "" {
		at, n, id := t.m.findControl(text)
		if at < 0 {
			return t.AppendText(dst, text, first)
		}
		dst = t.AppendText(dst, text[:at], first)
		dst = append(dst, id)
		text = text[at+n:]
		first = false
	}
	return dst
}

// Decode turns ids into text the way the reference of the current mode does; ids outside the
// vocabulary are skipped.
//
// Default (tokenizers, decoder Replace "▁"→" ", ByteFallback, Fuse, Strip one leading space):
// control tokens are spelled out ("<s>", "[INST]"), a run of byte tokens that is not valid
// UTF-8 becomes one U+FFFD per byte, and one leading space of the result is removed.
// SentencePiece mode (DecodeIds): control tokens are invisible, <unk> is " ⁇ ", invalid bytes
// become U+FFFD each, and the "▁" that starts the first visible piece is removed.
func (t *Tokenizer) Decode(ids []int32) string {
	if t.spm.Load() {
		return t.decodeSPM(ids)
	}
	return t.decodeHF(ids)
}

func (t *Tokenizer) decodeHF(ids []int32) string {
	m := t.m
	out := make([]byte, 0, 4*len(ids))
	var run []byte
	flush := func() {
		if utf8.Valid(run) {
			out = append(out, run...)
		} else {
			for range run {
				out = append(out, replacementUTF8...)
			}
		}
		run = run[:0]
	}
	for _, id := range ids {
		if id < 0 || int(id) >= len(m.pieces) {
			continue
		}
		if m.kinds[id] == kindByte {
			b, _ := parseBytePiece(m.pieces[id])
			run = append(run, b)
			continue
		}
		flush()
		out = appendSpaced(out, m.pieces[id])
	}
	flush()
	if len(out) > 0 && out[0] == ' ' {
		out = out[1:]
	}
	return string(out)
}

func (t *Tokenizer) decodeSPM(ids []int32) string {
	m := t.m
	out := make([]byte, 0, 4*len(ids))
	var run []byte
	flush := func() {
		for len(run) > 0 {
			r, w := utf8.DecodeRune(run)
			if r == utf8.RuneError && w <= 1 {
				out = append(out, replacementUTF8...)
				w = 1
			} else {
				out = append(out, run[:w]...)
			}
			run = run[w:]
		}
		run = run[:0]
	}
	isBosWS, bosWSSeen := true, false
	for _, id := range ids {
		if id < 0 || int(id) >= len(m.pieces) {
			continue
		}
		if m.kinds[id] == kindByte {
			b, _ := parseBytePiece(m.pieces[id])
			run = append(run, b)
			continue
		}
		flush()
		if bosWSSeen || len(out) > 0 {
			isBosWS = false
		}
		bosWSSeen = false
		switch m.kinds[id] {
		case kindControl:
		case kindUnknown:
			out = append(out, m.unkSurface...)
		default:
			p := m.pieces[id]
			if isBosWS && m.addDummyPrefix && strings.HasPrefix(p, metaSpace) {
				p, bosWSSeen = p[len(metaSpace):], true
			}
			out = appendSpaced(out, p)
		}
	}
	flush()
	return string(out)
}

// appendSpaced appends p with every "▁" turned into a space.
func appendSpaced(out []byte, p string) []byte {
	for {
		i := strings.Index(p, metaSpace)
		if i < 0 {
			return append(out, p...)
		}
		out = append(append(out, p[:i]...), ' ')
		p = p[i+len(metaSpace):]
	}
}

// ControlID returns the id of a control token by its spelling ("[INST]" -> 3, "<s>" -> 1,
// "<unk>" -> 0); ok is false for anything else, byte and text pieces included.
func (t *Tokenizer) ControlID(name string) (int32, bool) {
	id, ok := t.m.controls[name]
	return id, ok
}

// BOS is the id of <s>.
func (t *Tokenizer) BOS() int32 { return t.m.bos }

// EOS is the id of </s>.
func (t *Tokenizer) EOS() int32 { return t.m.eos }

// MaxPieceBytes is the most input bytes one token can stand for: the longest normal piece,
// "▁" counting as the one space it encodes (a byte-fallback token is one byte). So text of n
// bytes takes at least ⌈n / MaxPieceBytes⌉ tokens, a bound that costs no encoding.
func (t *Tokenizer) MaxPieceBytes() int {
	t.maxPieceOnce.Do(func() {
		t.maxPiece = 1
		for id, p := range t.m.pieces {
			if t.m.kinds[id] == kindNormal {
				t.maxPiece = max(t.maxPiece, len(strings.ReplaceAll(p, "▁", " ")))
			}
		}
	})
	return t.maxPiece
}

// VocabSize is the number of pieces (32768 for Mistral v0.3).
func (t *Tokenizer) VocabSize() int { return len(t.m.pieces) }

// Piece returns the spelling of id ("▁Hello", "<0x0A>", "[INST]"), or "" outside the
// vocabulary.
func (t *Tokenizer) Piece(id int32) string { return t.m.piece(id) }

// SHA256 is the hex sha256 of the file the tokenizer was loaded from, for the manifest.
func (t *Tokenizer) SHA256() string { return t.sum }

// Name is the file the tokenizer was loaded from, as given (a directory given to Load is
// joined with the file chosen in it); empty for LoadModelProto and LoadHFJSON.
func (t *Tokenizer) Name() string { return t.name }

// SetName sets what Name reports: a resolver that loaded the bytes of a downloaded file
// names the file's place in the cache. Call it before sharing the tokenizer.
func (t *Tokenizer) SetName(name string) { t.name = name }

// String describes the tokenizer for logs.
func (t *Tokenizer) String() string {
	return fmt.Sprintf("%s (%s, %d pieces)", t.name, t.m.format, len(t.m.pieces))
}
