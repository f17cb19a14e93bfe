//go:build daulet

package bpe

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/daulet/tokenizers"
)

// Daulet is Hugging Face tokenizers itself (Rust, through the cgo binding
// github.com/daulet/tokenizers) behind TextEncoder: a second implementation to cross-check
// the pure-Go BPE against, or to use instead of it. It is built only with the build tag
// daulet and needs libtokenizers.a (from that repository's releases or `make build`) where
// the linker finds it, e.g. CGO_LDFLAGS="-L/path/to/dir".
//
// To give AppendText the same meaning as Tokenizer's, the tokenizer.json is loaded with the
// Metaspace prepend_scheme set to "never" and with control-token spellings encoded as text;
// the dummy "▁" is then prepended here, by the same rule (first, and in SentencePiece mode
// always). The C API takes NUL-terminated strings, so text is cut at NUL bytes, which are
// byte-fallback tokens that never merge (exact for Mistral's vocabulary). Decode is always
// tokenizers' decode (control tokens spelled out), whatever SetSPM says.
type Daulet struct {
	tk    *tokenizers.Tokenizer
	nulID int32
	spm   bool
}

var _ TextEncoder = (*Daulet)(nil)

// NewDaulet loads tokenizer.json (a file, or a directory holding one) into Hugging Face
// tokenizers. Close it when done.
func NewDaulet(path string) (*Daulet, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, "tokenizer.json")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, &LoadError{Path: path, Reason: err.Error(), Err: ErrMalformedTokenizer}
	}
	pre, _ := doc["pre_tokenizer"].(map[string]any)
	if pre == nil || pre["type"] != "Metaspace" || pre["prepend_scheme"] != "first" {
		return nil, &LoadError{Path: path, Field: "pre_tokenizer", Reason: "only Metaspace with prepend_scheme \"first\"", Err: ErrUnsupportedTokenizer}
	}
	pre["prepend_scheme"] = "never"
	model, _ := doc["model"].(map[string]any)
	vocab, _ := model["vocab"].(map[string]any)
	nul, ok := vocab["<0x00>"].(float64)
	if !ok {
		return nil, &LoadError{Path: path, Field: "model.vocab", Reason: "no <0x00> piece", Err: ErrUnsupportedTokenizer}
	}
	patched, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	tk, err := tokenizers.FromBytes(patched, tokenizers.WithEncodeSpecialTokens())
	if err != nil {
		return nil, fmt.Errorf("tokenizers %s: %w", path, err)
	}
	return &Daulet{tk: tk, nulID: int32(nul)}, nil
}

// SetSPM switches SentencePiece mode (always a dummy prefix) on or off.
func (d *Daulet) SetSPM(on bool) { d.spm = on }

// AppendText appends the ids of text, with the same contract as Tokenizer.AppendText.
func (d *Daulet) AppendText(dst []int32, text string, first bool) []int32 {
	if text == "" {
		return dst
	}
	if first && (d.spm || !startsWithSpace(text)) {
		text = metaSpace + text
	}
	for i, part := range strings.Split(text, "\x00") {
		if i > 0 {
			dst = append(dst, d.nulID)
		}
		if part == "" {
			continue
		}
		ids, _ := d.tk.Encode(part, false)
		for _, id := range ids {
			dst = append(dst, int32(id))
		}
	}
	return dst
}

// Decode is tokenizers' decode with special tokens kept.
func (d *Daulet) Decode(ids []int32) string {
	u := make([]uint32, 0, len(ids))
	for _, id := range ids {
		if id >= 0 {
			u = append(u, uint32(id))
		}
	}
	return d.tk.Decode(u, false)
}

// Close frees the Rust tokenizer.
func (d *Daulet) Close() error { return d.tk.Close() }
