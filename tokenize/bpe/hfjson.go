package bpe

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// hfFile is the part of a Hugging Face tokenizer.json this package reads.
type hfFile struct {
	Normalizer   json.RawMessage `json:"normalizer"`
	PreTokenizer json.RawMessage `json:"pre_tokenizer"`
	Model        struct {
		Type                    string            `json:"type"`
		Dropout                 *float64          `json:"dropout"`
		UnkToken                *string           `json:"unk_token"`
		ContinuingSubwordPrefix *string           `json:"continuing_subword_prefix"`
		EndOfWordSuffix         *string           `json:"end_of_word_suffix"`
		ByteFallback            bool              `json:"byte_fallback"`
		IgnoreMerges            bool              `json:"ignore_merges"`
		Vocab                   map[string]int32  `json:"vocab"`
		Merges                  []json.RawMessage `json:"merges"`
	} `json:"model"`
	AddedTokens []struct {
		ID         int32  `json:"id"`
		Content    string `json:"content"`
		SingleWord bool   `json:"single_word"`
		LStrip     bool   `json:"lstrip"`
		RStrip     bool   `json:"rstrip"`
		Normalized bool   `json:"normalized"`
		Special    bool   `json:"special"`
	} `json:"added_tokens"`
}

// metaspaceConfig is the pre-tokenizer a SentencePiece-converted tokenizer.json carries.
type metaspaceConfig struct {
	Type          string `json:"type"`
	Replacement   string `json:"replacement"`
	PrependScheme string `json:"prepend_scheme"`
	Split         bool   `json:"split"`
}

// parseHFJSON reads a tokenizer.json holding a BPE model converted from SentencePiece (the
// form of Mistral v0.3's): no normalizer, a Metaspace pre-tokenizer that does not split and
// prepends "▁" to the text at offset 0 only, byte fallback, and special added tokens that are
// also vocabulary entries. Merge priority is the merge's position in the list, as in
// tokenizers' BPE; anything else is refused with ErrUnsupportedTokenizer.
func parseHFJSON(data []byte) (*model, error) {
	var f hfFile
	if err := json.Unmarshal(data, &f); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn):
			return nil, &LoadError{Reason: fmt.Sprintf("not JSON (byte %d: %v)", syn.Offset, err), Err: ErrMalformedTokenizer}
		case errors.As(err, &typ) && typ.Field == "":
			return nil, &LoadError{Reason: fmt.Sprintf("a JSON %s, not the object of a tokenizer.json", typ.Value), Err: ErrMalformedTokenizer}
		}
		return nil, &LoadError{Reason: err.Error(), Err: ErrMalformedTokenizer}
	}
	if n := bytes.TrimSpace(f.Normalizer); len(n) > 0 && !bytes.Equal(n, []byte("null")) {
		return nil, unsupported("normalizer", "%s (only null)", abbrev(n))
	}
	var ms metaspaceConfig
	if err := json.Unmarshal(f.PreTokenizer, &ms); err != nil {
		return nil, malformed("pre_tokenizer", "%v", err)
	}
	if ms.Type != "Metaspace" || ms.Replacement != metaSpace || ms.Split {
		return nil, unsupported("pre_tokenizer", "%s (only Metaspace with replacement %q and split false)", abbrev(f.PreTokenizer), metaSpace)
	}
	if ms.PrependScheme != "first" {
		return nil, unsupported("pre_tokenizer.prepend_scheme", "%q (only \"first\")", ms.PrependScheme)
	}
	mj := &f.Model
	switch {
	case mj.Type != "BPE":
		return nil, unsupported("model.type", "%q (only BPE)", mj.Type)
	case mj.Dropout != nil && *mj.Dropout != 0:
		return nil, unsupported("model.dropout", "%v", *mj.Dropout)
	case mj.ContinuingSubwordPrefix != nil && *mj.ContinuingSubwordPrefix != "":
		return nil, unsupported("model.continuing_subword_prefix", "%q", *mj.ContinuingSubwordPrefix)
	case mj.EndOfWordSuffix != nil && *mj.EndOfWordSuffix != "":
		return nil, unsupported("model.end_of_word_suffix", "%q", *mj.EndOfWordSuffix)
	case !mj.ByteFallback:
		return nil, unsupported("model.byte_fallback", "false")
	case mj.IgnoreMerges:
		return nil, unsupported("model.ignore_merges", "true")
	case mj.UnkToken == nil:
		return nil, unsupported("model.unk_token", "null")
	}

	m := &model{format: "tokenizers-json", addDummyPrefix: true}
	n := len(mj.Vocab)
	m.pieces = make([]string, n)
	m.kinds = make([]pieceKind, n)
	seen := make([]bool, n)
	spellings := make([]string, 0, n)
	for p := range mj.Vocab {
		spellings = append(spellings, p)
	}
	sort.Strings(spellings) // a bad vocabulary is reported the same way every time
	for _, p := range spellings {
		id := mj.Vocab[p]
		if id < 0 || int(id) >= n || seen[id] {
			return nil, malformed("model.vocab", "ids are not 0..%d, each once (%q has %d)", n-1, p, id)
		}
		seen[id] = true
		m.pieces[id] = p
		if _, ok := parseBytePiece(p); ok {
			m.kinds[id] = kindByte
		}
	}
	for i, at := range f.AddedTokens {
		field := fmt.Sprintf("added_tokens[%d]", i)
		if at.ID < 0 || int(at.ID) >= n || m.pieces[at.ID] != at.Content {
			return nil, unsupported(field, "%q (id %d) is not the vocabulary piece of that id", at.Content, at.ID)
		}
		if !at.Special || at.Normalized || at.SingleWord || at.LStrip || at.RStrip {
			return nil, unsupported(field, "%q: only special, non-normalized tokens without strip/single_word", at.Content)
		}
		m.kinds[at.ID] = kindControl
	}
	var ok bool
	if m.unk, ok = mj.Vocab[*mj.UnkToken]; !ok {
		return nil, malformed("model.unk_token", "%q not in the vocabulary", *mj.UnkToken)
	}
	m.kinds[m.unk] = kindUnknown
	if m.bos, ok = mj.Vocab["<s>"]; !ok {
		return nil, unsupported("model.vocab", "no <s> piece")
	}
	if m.eos, ok = mj.Vocab["</s>"]; !ok {
		return nil, unsupported("model.vocab", "no </s> piece")
	}

	m.merges = make(map[uint64]mergeRule, len(mj.Merges))
	for i, raw := range mj.Merges {
		a, b, err := parseMerge(raw)
		if err != nil {
			return nil, malformed(fmt.Sprintf("model.merges[%d]", i), "%v", err)
		}
		l, lok := mj.Vocab[a]
		r, rok := mj.Vocab[b]
		res, resok := mj.Vocab[a+b]
		if !lok || !rok || !resok {
			return nil, malformed(fmt.Sprintf("model.merges[%d]", i), "%q + %q: piece not in the vocabulary", a, b)
		}
		// Control tokens are never produced from text, and byte pieces only by fallback.
		if m.kinds[l] != kindNormal || m.kinds[r] != kindNormal || m.kinds[res] != kindNormal {
			return nil, unsupported(fmt.Sprintf("model.merges[%d]", i), "%q + %q involves a control or byte piece", a, b)
		}
		// A repeated merge takes its later rank, as tokenizers' HashMap collect does.
		m.merges[pairKey(l, r)] = mergeRule{rank: int32(i), id: res}
	}
	if err := m.finish(); err != nil {
		return nil, err
	}
	return m, nil
}

// parseMerge accepts both spellings of a merge: "a b" (tokenizers < 0.20) and ["a", "b"].
func parseMerge(raw json.RawMessage) (string, string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		a, b, ok := strings.Cut(s, " ")
		if !ok || a == "" || b == "" {
			return "", "", fmt.Errorf("%q is not two pieces separated by a space", s)
		}
		return a, b, nil
	}
	var pair []string
	if err := json.Unmarshal(raw, &pair); err != nil || len(pair) != 2 || pair[0] == "" || pair[1] == "" {
		return "", "", fmt.Errorf("%s is neither \"a b\" nor [\"a\", \"b\"]", abbrev(raw))
	}
	return pair[0], pair[1], nil
}

func abbrev(b []byte) string {
	const limit = 120
	if len(b) > limit {
		return string(b[:limit]) + "…"
	}
	return string(b)
}
