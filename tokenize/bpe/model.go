package bpe

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"
)

// Errors of the tokenizer loaders. A LoadError wraps one of them and names the file and field.
var (
	// ErrMalformedTokenizer: the file is not a valid tokenizer.model / tokenizer.json (truncated
	// protobuf, bad JSON, a merge naming a piece that is not in the vocabulary, ...).
	ErrMalformedTokenizer = errors.New("malformed tokenizer file")
	// ErrUnsupportedTokenizer: a valid file asking for behaviour this BPE does not implement
	// (a Unigram model, a normalizer, user-defined pieces, no byte fallback, ...). Refusing is
	// better than producing ids that silently differ from the reference implementation.
	ErrUnsupportedTokenizer = errors.New("unsupported tokenizer")
	// ErrNoTokenizerFile: a directory holds neither tokenizer.json nor tokenizer.model.
	ErrNoTokenizerFile = errors.New("no tokenizer.json or tokenizer.model")
)

// LoadError reports why a tokenizer file was refused: Path is the file as given, Field the
// offending part of it (e.g. "pre_tokenizer.prepend_scheme", "trainer_spec.model_type"), Err
// one of the sentinels above (errors.Is) possibly wrapping a lower-level cause.
type LoadError struct {
	Path   string
	Field  string
	Reason string
	Err    error
}

func (e *LoadError) Error() string {
	var b strings.Builder
	b.WriteString("tokenizer")
	if e.Path != "" {
		b.WriteString(" " + e.Path)
	}
	if e.Field != "" {
		b.WriteString(": " + e.Field)
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	if e.Reason != "" {
		b.WriteString(": " + e.Reason)
	}
	return b.String()
}

func (e *LoadError) Unwrap() error { return e.Err }

func malformed(field, format string, args ...any) error {
	return &LoadError{Field: field, Reason: fmt.Sprintf(format, args...), Err: ErrMalformedTokenizer}
}

func unsupported(field, format string, args ...any) error {
	return &LoadError{Field: field, Reason: fmt.Sprintf(format, args...), Err: ErrUnsupportedTokenizer}
}

// metaSpace is SentencePiece's whitespace symbol U+2581; spaces in the text become it.
const metaSpace = "\u2581"

// pieceKind classifies vocabulary entries as SentencePiece does. Only normal pieces take part
// in BPE; control and unknown pieces are reachable only as explicit ids (or, with
// EncodeOptions.ParseSpecial, from their spelling); byte pieces only through byte fallback.
type pieceKind uint8

const (
	kindNormal pieceKind = iota
	kindControl
	kindUnknown
	kindByte
)

// mergeRule is what two adjacent symbols become: the resulting piece id and the merge's
// priority (lower rank merges first; equal ranks merge leftmost first).
type mergeRule struct {
	rank int32
	id   int32
}

// model is the vocabulary and merge table that both file formats are reduced to. It is
// immutable after finish, so any number of goroutines may encode with it.
type model struct {
	format string // "sentencepiece" or "tokenizers-json", for messages

	pieces []string
	kinds  []pieceKind

	bos, eos, unk int32
	space         int32 // the piece "▁"

	// addDummyPrefix: the model prepends "▁" to the text (SentencePiece add_dummy_prefix,
	// tokenizers Metaspace prepend_scheme "first").
	addDummyPrefix bool
	unkSurface     string // SentencePiece's rendering of <unk> when decoding

	merges map[uint64]mergeRule // filled by the loaders; finish builds pairs from it

	// Derived by finish.
	pairs      mergeTable
	ascii      [128]int32     // single-character normal pieces, -1 when absent
	bmp        []int32        // the same for U+0080..U+FFFF, indexed by rune
	chars      map[rune]int32 // the same beyond the BMP
	byteID     [256]int32
	controls   map[string]int32 // control/unknown piece spellings, for ParseSpecial
	ctrlFirst  [256]bool
	ctrlMaxLen int
	// splitAtSpace: no merge result holds "▁" after another character (except in runs of
	// "▁" only), so BPE never merges across the start of a run of spaces and each such
	// chunk can be encoded (and cached) alone with exactly the same result.
	splitAtSpace bool
	maxRank      int32 // the highest merge rank (mergeLarge keeps ranks in 16 bits below 65535)
}

func pairKey(left, right int32) uint64 { return uint64(uint32(left))<<32 | uint64(uint32(right)) }

// finish validates what the loaders filled in and builds the lookup tables.
func (m *model) finish() error {
	n := len(m.pieces)
	if n == 0 {
		return malformed("vocab", "no pieces")
	}
	if n > 1<<30 {
		return unsupported("vocab", "%d pieces", n)
	}
	for i := range m.ascii {
		m.ascii[i] = -1
	}
	for i := range m.byteID {
		m.byteID[i] = -1
	}
	m.chars = make(map[rune]int32)
	m.bmp = make([]int32, 0x10000)
	for i := range m.bmp {
		m.bmp[i] = -1
	}
	m.controls = make(map[string]int32)
	m.space = -1
	for id, p := range m.pieces {
		switch m.kinds[id] {
		case kindNormal:
			if p == "" {
				return malformed(fmt.Sprintf("pieces[%d]", id), "empty piece")
			}
			if !utf8.ValidString(p) {
				return malformed(fmt.Sprintf("pieces[%d]", id), "piece is not valid UTF-8")
			}
			r, w := utf8.DecodeRuneInString(p)
			if w == len(p) {
				switch {
				case r < utf8.RuneSelf:
					m.ascii[r] = int32(id)
				case r < 0x10000:
					m.bmp[r] = int32(id)
				default:
					m.chars[r] = int32(id)
				}
			}
			if p == metaSpace {
				m.space = int32(id)
			}
		case kindByte:
			b, ok := parseBytePiece(p)
			if !ok {
				return malformed(fmt.Sprintf("pieces[%d]", id), "byte piece %q is not <0xNN>", p)
			}
			m.byteID[b] = int32(id)
		case kindControl, kindUnknown:
			if p == "" {
				return malformed(fmt.Sprintf("pieces[%d]", id), "empty control piece")
			}
			m.controls[p] = int32(id)
			m.ctrlFirst[p[0]] = true
			m.ctrlMaxLen = max(m.ctrlMaxLen, len(p))
		}
	}
	for b, id := range m.byteID {
		if id < 0 {
			return unsupported("vocab", "byte fallback piece <0x%02X> missing", b)
		}
	}
	if m.space < 0 {
		return unsupported("vocab", "no %q piece", metaSpace)
	}
	m.ascii[' '] = m.space // spaces are "▁" before the BPE sees them (a " " piece is never used)
	for _, c := range []struct {
		name string
		id   int32
	}{{"bos", m.bos}, {"eos", m.eos}, {"unk", m.unk}} {
		if c.id < 0 || int(c.id) >= n {
			return malformed(c.name+"_id", "id %d outside the vocabulary", c.id)
		}
	}
	if m.unkSurface == "" {
		m.unkSurface = " \u2047 "
	}
	// The loaders check each merge in file order (so that errors name the same merge every
	// time); here only a property of the whole set is derived.
	m.splitAtSpace = true
	for _, r := range m.merges {
		if spaceAfterOther(m.pieces[r.id]) {
			m.splitAtSpace = false
		}
		m.maxRank = max(m.maxRank, r.rank)
	}
	m.pairs = newMergeTable(m.merges)
	// The BPE starts from single characters; a character that is not a piece itself falls
	// back to bytes at once (as tokenizers does), which is only what SentencePiece does
	// (merge its string, fall back at the end) when no merge can ever involve it.
	for id, p := range m.pieces {
		if m.kinds[id] != kindNormal {
			continue
		}
		for _, r := range p {
			if m.charID(r) < 0 {
				return unsupported(fmt.Sprintf("pieces[%d]", id), "piece %q holds %q, which is not a piece itself", p, r)
			}
		}
	}
	return nil
}

// spaceAfterOther reports whether p holds "▁" right after a character other than "▁".
func spaceAfterOther(p string) bool {
	prevSpace := true // a leading "▁" is fine
	for _, r := range p {
		isSpace := r == '\u2581'
		if isSpace && !prevSpace {
			return true
		}
		prevSpace = isSpace
	}
	return false
}

func (m *model) piece(id int32) string {
	if id < 0 || int(id) >= len(m.pieces) {
		return ""
	}
	return m.pieces[id]
}

// charID is the normal piece spelling exactly r, or -1.
func (m *model) charID(r rune) int32 {
	if r >= 0 && r < utf8.RuneSelf {
		return m.ascii[r]
	}
	if r >= 0 && r < 0x10000 {
		return m.bmp[r]
	}
	if id, ok := m.chars[r]; ok {
		return id
	}
	return -1
}

// findControl returns the leftmost-longest control-token spelling in s (its offset, byte
// length and id), as tokenizers' added-vocabulary matcher does, or offset -1.
func (m *model) findControl(s string) (at, n int, id int32) {
	for i := 0; i < len(s); i++ {
		if !m.ctrlFirst[s[i]] {
			continue
		}
		for l := min(m.ctrlMaxLen, len(s)-i); l > 0; l-- {
			if id, ok := m.controls[s[i:i+l]]; ok {
				return i, l, id
			}
		}
	}
	return -1, 0, 0
}

// parseBytePiece parses "<0xNN>" (upper- or lower-case hex).
func parseBytePiece(p string) (byte, bool) {
	if len(p) != 6 || p[:3] != "<0x" || p[5] != '>' {
		return 0, false
	}
	hi, ok1 := unhex(p[3])
	lo, ok2 := unhex(p[4])
	return hi<<4 | lo, ok1 && ok2
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// rankByScore assigns SentencePiece merge priorities: a higher piece score merges first and
// equal scores tie (then the leftmost pair wins), exactly the order of bpe_model.cc's agenda.
func rankByScore(scores []float32, ids []int32) map[int32]int32 {
	distinct := make([]float32, 0, len(ids))
	for _, id := range ids {
		distinct = append(distinct, scores[id])
	}
	sort.Slice(distinct, func(i, j int) bool { return distinct[i] > distinct[j] })
	rank := make(map[float32]int32, len(distinct))
	for _, s := range distinct {
		if _, ok := rank[s]; !ok {
			rank[s] = int32(len(rank))
		}
	}
	out := make(map[int32]int32, len(ids))
	for _, id := range ids {
		out[id] = rank[scores[id]]
	}
	return out
}

// mergeTable is the merge map as an open-addressing hash table (linear probing, at most half
// full): the BPE looks a pair up for every adjacent pair and every merge, and this flat
// table is markedly cheaper than a Go map there.
type mergeTable struct {
	slots []mergeSlot
	shift uint
}

type mergeSlot struct {
	key  uint64 // pairKey | occupied; 0 = empty
	rule mergeRule
}

const slotOccupied = 1 << 63

func newMergeTable(merges map[uint64]mergeRule) mergeTable {
	size, bits := 16, uint(4)
	for size < 2*len(merges) {
		size, bits = size*2, bits+1
	}
	t := mergeTable{slots: make([]mergeSlot, size), shift: 64 - bits}
	mask := uint64(size - 1)
	for k, r := range merges {
		key := k | slotOccupied
		for h := t.hash(key); ; h = (h + 1) & mask {
			if t.slots[h].key == 0 {
				t.slots[h] = mergeSlot{key: key, rule: r}
				break
			}
		}
	}
	return t
}

func (t *mergeTable) hash(key uint64) uint64 { return (key * 0x9E3779B97F4A7C15) >> t.shift }

func (t *mergeTable) get(left, right int32) (mergeRule, bool) {
	key := pairKey(left, right) | slotOccupied
	mask := uint64(len(t.slots) - 1)
	for h := t.hash(key); ; h = (h + 1) & mask {
		s := &t.slots[h]
		if s.key == key {
			return s.rule, true
		}
		if s.key == 0 {
			return mergeRule{}, false
		}
	}
}
