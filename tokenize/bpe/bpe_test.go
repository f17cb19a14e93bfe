package bpe

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ktoloader/ktoloader/internal/shared"
)

// tinyVocab is a small SentencePiece-like vocabulary: four control tokens, 256 byte pieces,
// "▁", then the given pieces. Ids of the given pieces start at tinyBase+1.
var tinyControls = []string{"<unk>", "<s>", "</s>", "[INST]"}

const tinyBase = 4 + 256 // id of "▁"

func tinyPieces(extra []string) []string {
	p := slices.Clone(tinyControls)
	for b := 0; b < 256; b++ {
		p = append(p, fmt.Sprintf("<0x%02X>", b))
	}
	return append(append(p, metaSpace), extra...)
}

// tinyJSON builds a tokenizer.json in the form of Mistral's with the given pieces and merges.
func tinyJSON(t testing.TB, extra, merges []string) *Tokenizer {
	t.Helper()
	vocab := map[string]int{}
	for i, p := range tinyPieces(extra) {
		vocab[p] = i
	}
	var added []map[string]any
	for i, c := range tinyControls {
		added = append(added, map[string]any{"id": i, "content": c, "special": true, "normalized": false})
	}
	doc := map[string]any{
		"normalizer":    nil,
		"pre_tokenizer": map[string]any{"type": "Metaspace", "replacement": metaSpace, "prepend_scheme": "first", "split": false},
		"model": map[string]any{"type": "BPE", "unk_token": "<unk>", "byte_fallback": true, "fuse_unk": true,
			"vocab": vocab, "merges": merges},
		"added_tokens": added,
	}
	data, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	tk, err := LoadHFJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

type spPiece struct {
	piece string
	score float32
	typ   uint64
}

// tinyProtoBytes builds a SentencePiece ModelProto like Mistral's (BPE, byte fallback,
// identity normalizer, dummy prefix, extra whitespace kept), with normalizer fields replaced
// by norm when non-nil.
func tinyProtoBytes(extra []spPiece, modelType uint64, norm []byte) []byte {
	var pieces []spPiece
	for i, c := range tinyControls {
		typ := uint64(spControl)
		if i == 0 {
			typ = spUnknown
		}
		pieces = append(pieces, spPiece{c, 0, typ})
	}
	for b := 0; b < 256; b++ {
		pieces = append(pieces, spPiece{fmt.Sprintf("<0x%02X>", b), 0, spByte})
	}
	pieces = append(append(pieces, spPiece{metaSpace, -1e9, spNormal}), extra...)
	var out []byte
	for _, p := range pieces {
		var m []byte
		m = protowire.AppendTag(m, spPiecePiece, protowire.BytesType)
		m = protowire.AppendString(m, p.piece)
		m = protowire.AppendTag(m, spPieceScore, protowire.Fixed32Type)
		m = protowire.AppendFixed32(m, math.Float32bits(p.score))
		m = protowire.AppendTag(m, spPieceType, protowire.VarintType)
		m = protowire.AppendVarint(m, p.typ)
		out = protowire.AppendTag(out, spModelPieces, protowire.BytesType)
		out = protowire.AppendBytes(out, m)
	}
	var tr []byte
	for _, f := range [][2]uint64{{spTrainerModelType, modelType}, {spTrainerByteFallback, 1}, {spTrainerUnkID, 0}, {spTrainerBosID, 1}, {spTrainerEosID, 2}} {
		tr = protowire.AppendTag(tr, protowire.Number(f[0]), protowire.VarintType)
		tr = protowire.AppendVarint(tr, f[1])
	}
	out = protowire.AppendTag(out, spModelTrainer, protowire.BytesType)
	out = protowire.AppendBytes(out, tr)
	if norm == nil {
		norm = protowire.AppendTag(norm, spNormName, protowire.BytesType)
		norm = protowire.AppendString(norm, "identity")
		for _, f := range [][2]uint64{{spNormDummyPrefix, 1}, {spNormRemoveSpaces, 0}, {spNormEscapeSpaces, 1}} {
			norm = protowire.AppendTag(norm, protowire.Number(f[0]), protowire.VarintType)
			norm = protowire.AppendVarint(norm, f[1])
		}
	}
	out = protowire.AppendTag(out, spModelNormalizer, protowire.BytesType)
	return protowire.AppendBytes(out, norm)
}

func tinyProto(t testing.TB, extra []spPiece) *Tokenizer {
	t.Helper()
	tk, err := LoadModelProto(bytes.NewReader(tinyProtoBytes(extra, spBPE, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func normal(pieces ...string) []spPiece {
	out := make([]spPiece, len(pieces))
	for i, p := range pieces {
		out[i] = spPiece{p, -float32(i), spNormal} // score = -rank, as in Mistral's model
	}
	return out
}

func spell(tk *Tokenizer, ids []int32) string {
	return strings.Join(pieces(tk, ids), " ")
}

// TestBPESemantics pins the merge rules of both references on tiny vocabularies, the
// expectations worked out by hand from the algorithms' definitions.
func TestBPESemantics(t *testing.T) {
	jsonRank := tinyJSON(t, []string{"a", "b", "c", "ab", "bc", "abc", "▁a", "é"}, []string{"b c", "a b", "a bc", "▁ a"})
	jsonNoABC := tinyJSON(t, []string{"a", "b", "c", "ab", "bc", "abc"}, []string{"a b", "b c"})
	spScore := tinyProto(t, normal("a", "b", "c", "ab", "bc", "abc"))
	spTie := tinyProto(t, normal("a", "aa", "▁a"))
	spSpaces := tinyProto(t, []spPiece{{"x", -1, spNormal}, {"▁x", -2, spNormal}, {"▁▁", -1e9, spNormal}, {"▁▁▁", -1e9, spNormal}})
	spmOn := func(tk *Tokenizer) *Tokenizer { tk.SetSPM(true); return tk }
	spSpacesSPM := spmOn(tinyProto(t, []spPiece{{"x", -1, spNormal}, {"▁x", -2, spNormal}, {"▁▁", -1e9, spNormal}, {"▁▁▁", -1e9, spNormal}}))

	cases := []struct {
		name  string
		tk    *Tokenizer
		text  string
		first bool
		want  string
	}{
		{"json: lowest merge rank first", jsonRank, "abc", false, "abc"},
		{"json: only listed merges", jsonNoABC, "abc", false, "ab c"},
		{"sp: any pair spelling a piece, best score first", spScore, "abc", false, "abc"},
		{"sp: equal scores merge leftmost first", spTie, "aaa", false, "aa a"},
		{"sp: leftmost again after a merge", spTie, "aaaaa", false, "aa aa a"},
		{"byte fallback", jsonNoABC, "a€", false, "a <0xE2> <0x82> <0xAC>"},
		{"invalid UTF-8 is U+FFFD", jsonNoABC, "\xff", false, "<0xEF> <0xBF> <0xBD>"},
		{"dummy prefix at offset 0", jsonRank, "a", true, "▁a"},
		{"no prefix when not first", jsonRank, "a", false, "a"},
		{"no prefix before a space", jsonRank, " a", true, "▁a"},
		{"no prefix before ▁", jsonRank, "▁a", true, "▁a"},
		{"space run: last space joins the word", spSpaces, "  x", false, "▁ ▁x"},
		{"space run: no word to join", spSpaces, "  ", false, "▁▁"},
		{"space run: three leftmost", spSpaces, "     x", false, "▁▁▁ ▁ ▁x"},
		{"spm: prefix even before a space", spSpacesSPM, " x", true, "▁ ▁x"},
		{"spm: prefix joins the word", spSpacesSPM, "x", true, "▁x"},
		{"spm: not first, no prefix", spSpacesSPM, "x", false, "x"},
	}
	for _, c := range cases {
		got := spell(c.tk, c.tk.AppendText(nil, c.text, c.first))
		if got != c.want {
			t.Errorf("%s: %q -> %s, want %s", c.name, c.text, got, c.want)
		}
	}
}

// TestSplitAtSpaceOff: a vocabulary with a piece holding "▁" after another character turns
// the chunking off, and the pieces across the space are then found.
func TestSplitAtSpaceOff(t *testing.T) {
	tk := tinyJSON(t, []string{"a", "b", "a▁", "a▁b"}, []string{"a ▁", "a▁ b"})
	if tk.m.splitAtSpace {
		t.Fatal("splitAtSpace on with an \"a▁\" piece")
	}
	if got := spell(tk, tk.AppendText(nil, "a b", false)); got != "a▁b" {
		t.Fatalf("got %s, want a▁b", got)
	}
	if !mistralOrTiny(t).m.splitAtSpace {
		t.Error("splitAtSpace off for Mistral's vocabulary")
	}
}

func TestLoadModelProtoRefuses(t *testing.T) {
	var removeSpaces []byte // normalizer without remove_extra_whitespaces: default true
	removeSpaces = protowire.AppendTag(removeSpaces, spNormName, protowire.BytesType)
	removeSpaces = protowire.AppendString(removeSpaces, "identity")
	var nfkc []byte
	nfkc = protowire.AppendTag(nfkc, spNormName, protowire.BytesType)
	nfkc = protowire.AppendString(nfkc, "nmt_nfkc")
	cases := []struct {
		name, field string
		data        []byte
	}{
		{"unigram", "trainer_spec.model_type", tinyProtoBytes(normal("a"), 1, nil)},
		{"remove_extra_whitespaces default", "normalizer_spec.remove_extra_whitespaces", tinyProtoBytes(normal("a"), spBPE, removeSpaces)},
		{"nfkc", "normalizer_spec.name", tinyProtoBytes(normal("a"), spBPE, nfkc)},
		{"user defined", "pieces[262].type", tinyProtoBytes([]spPiece{{"a", 0, spNormal}, {"<x>", 0, spUserDefined}}, spBPE, nil)},
		{"char not a piece", "pieces[261]", tinyProtoBytes(normal("ab"), spBPE, nil)},
	}
	for _, c := range cases {
		_, err := LoadModelProto(bytes.NewReader(c.data))
		var le *LoadError
		if !errors.Is(err, ErrUnsupportedTokenizer) || !errors.As(err, &le) || le.Field != c.field {
			t.Errorf("%s: %v, want ErrUnsupportedTokenizer naming %s", c.name, err, c.field)
		}
	}
}

// naiveBPE is the definition of the merge loop, written plainly: over the whole text, find
// the adjacent pair with the lowest rank (leftmost on ties), merge it, repeat. Quadratic; the
// reference the chunked, cached, heap-based encoder is fuzzed against.
func naiveBPE(m *model, text string, prefix bool) []int32 {
	var ids []int32
	if prefix {
		ids = append(ids, m.space)
	}
	for _, r := range text { // an invalid byte arrives as U+FFFD
		if r == ' ' {
			r = '\u2581'
		}
		if id := m.charID(r); id >= 0 {
			ids = append(ids, id)
			continue
		}
		for _, b := range []byte(string(r)) {
			ids = append(ids, m.byteID[b])
		}
	}
	for {
		best, bestRank, bestID := -1, int32(math.MaxInt32), int32(0)
		for i := 0; i+1 < len(ids); i++ {
			if r, ok := m.merges[pairKey(ids[i], ids[i+1])]; ok && r.rank < bestRank {
				best, bestRank, bestID = i, r.rank, r.id
			}
		}
		if best < 0 {
			return ids
		}
		ids = slices.Replace(ids, best, best+2, bestID)
	}
}

// TestEncoderMatchesPlainBPE: chunking, caching, the small-chunk loop and the heap loop
// together give what the plain definition gives, on the goldens, Nexus texts and seeded random
// strings over an alphabet rich in spaces and byte-fallback characters (long ones take the
// heap path).
func TestEncoderMatchesPlainBPE(t *testing.T) {
	tk := mistralOrTiny(t)
	texts := nexusTexts(t, 500)
	if dir := shared.Find(); dir != "" {
		for _, c := range loadGolden(t).Cases {
			texts = append(texts, c.Text)
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	alphabet := []rune("aeiou tnsrl  ▁\n\t.,0129😀é中\x00{}\"")
	for i := 0; i < 2000; i++ {
		w := make([]rune, rng.IntN(80))
		for j := range w {
			w[j] = alphabet[rng.IntN(len(alphabet))]
		}
		texts = append(texts, string(w))
	}
	for _, s := range texts {
		for _, first := range []bool{true, false} {
			prefix := first && s != "" && !startsWithSpace(s)
			if got, want := tk.AppendText(nil, s, first), naiveBPE(tk.m, s, prefix); !slices.Equal(got, want) {
				t.Fatalf("%q first=%v:\n got %v\nwant %v", abbrevText(s), first, got, want)
			}
		}
	}
}

// mistralOrTiny is the real tokenizer (HF mode) when the shared folder is there, else a tiny
// one, so that the fuzz seeds run on any clone.
func mistralOrTiny(t testing.TB) *Tokenizer {
	if dir := shared.Find(); dir != "" {
		if _, err := os.Stat(filepath.Join(dir, "tokenizers", "mistral-7b-v0.3", "tokenizer.json")); err == nil {
			return mistral(t, "tokenizer.json", false)
		}
	}
	return tinyJSON(t, []string{"a", "b", "c", "ab", "bc", "abc", "▁a", "▁▁"}, []string{"b c", "a b", "a bc", "▁ a", "▁ ▁"})
}

// FuzzRoundTrip checks, for any input (invalid UTF-8 included; invalid bytes count as
// U+FFFD, call that valid(s)):
//
//   - the ids equal the plain quadratic BPE over the whole text (chunking and caching change
//     nothing) and are all text pieces, never control tokens;
//   - the round trip of the default mode: Decode(AppendText(s, first)) ==
//     valid(s) with "▁" as " " and one leading space removed (tokenizers drops the space
//     that the dummy prefix stands for, and also a space the text began with);
//   - the round trip of SentencePiece mode: Decode == valid(s) with "▁" as " ", exactly;
//   - Encode with ParseSpecial has the same default-mode round trip (control tokens decode
//     to their spelling).
func FuzzRoundTrip(f *testing.F) {
	for _, s := range []string{"", " ", "Hello world", "  two", "▁ x ▁▁", "a\x00b", "\xff\xfe", "日本語 😀", "[INST] x </s>", "a\n\n  b\t"} {
		f.Add(s)
	}
	hf := mistralOrTiny(f)
	spm := &Tokenizer{m: hf.m} // same model, own mode
	spm.resetCaches()
	spm.SetSPM(true)
	f.Fuzz(func(t *testing.T, s string) {
		valid := string([]rune(s))
		spaced := strings.ReplaceAll(valid, metaSpace, " ")

		ids := hf.AppendText(nil, s, true)
		for _, id := range ids {
			if id < 0 || int(id) >= hf.VocabSize() || hf.m.kinds[id] == kindControl || hf.m.kinds[id] == kindUnknown {
				t.Fatalf("%q: id %d is not a text piece", s, id)
			}
		}
		if len(s) <= 4096 {
			prefix := s != "" && !startsWithSpace(s)
			if want := naiveBPE(hf.m, s, prefix); !slices.Equal(ids, want) {
				t.Fatalf("%q:\n got %v\nwant %v (plain BPE)", s, ids, want)
			}
		}
		if got, want := hf.Decode(ids), strings.TrimPrefix(spaced, " "); got != want {
			t.Fatalf("default round trip of %q: got %q, want %q", s, got, want)
		}
		if got := spm.Decode(spm.AppendText(nil, s, true)); got != spaced {
			t.Fatalf("SentencePiece round trip of %q: got %q, want %q", s, got, spaced)
		}
		if got, want := hf.Decode(hf.Encode(s, EncodeOptions{ParseSpecial: true})), strings.TrimPrefix(spaced, " "); got != want {
			t.Fatalf("ParseSpecial round trip of %q: got %q, want %q", s, got, want)
		}
	})
}

// benchTexts is what BenchmarkEncode encodes: the lines of $KTOLOADER_BENCH_TEXT when set
// (bench/tokenize.sh passes the very lines it gives spm_encode), else the message texts of the
// Nexus KTO data.
func benchTexts(b *testing.B) ([]string, int) {
	var texts []string
	if p := os.Getenv("KTOLOADER_BENCH_TEXT"); p != "" {
		f, err := os.Open(p)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 64<<20)
		for sc.Scan() {
			texts = append(texts, sc.Text())
		}
		if err := sc.Err(); err != nil {
			b.Fatal(err)
		}
	} else {
		texts = nexusTexts(b, 0)
	}
	if len(texts) == 0 {
		b.Skip("no benchmark text: shared Nexus data absent and KTOLOADER_BENCH_TEXT unset")
	}
	n := 0
	for _, s := range texts {
		n += len(s)
	}
	return texts, n
}

// withoutCache returns a tokenizer on the same model whose chunk caches are off.
func withoutCache(tk *Tokenizer) *Tokenizer {
	nc := &Tokenizer{m: tk.m, pool: &sync.Pool{New: func() any { return &scratch{noCache: true} }}}
	nc.SetSPM(tk.SPM())
	return nc
}

// TestCacheMatchesBPE: the cached encoder (generations turning over many times) gives what
// the bare BPE gives, on many distinct seeded random words and on the Nexus texts.
func TestCacheMatchesBPE(t *testing.T) {
	tk := mistralOrTiny(t)
	bare := withoutCache(tk)
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []rune("abc ▁xyzé😀\n0")
	texts := nexusTexts(t, 3000)
	for i := 0; i < 3*cacheGenSize; i++ {
		w := make([]rune, 1+rng.IntN(8))
		for j := range w {
			w[j] = alphabet[rng.IntN(len(alphabet))]
		}
		texts = append(texts, string(w))
	}
	for pass := 0; pass < 2; pass++ {
		for i, s := range texts {
			first := i%2 == 0
			if got, want := tk.AppendText(nil, s, first), bare.AppendText(nil, s, first); !slices.Equal(got, want) {
				t.Fatalf("pass %d, %q: cached %v, bare %v", pass, s, got, want)
			}
		}
	}
}

// BenchmarkEncode encodes real text in SentencePiece mode with tokenizer.model (what
// spm_encode does) on one goroutine. cold: every pass starts with empty caches, as one prep
// run does; warm: the caches carry over between passes; nocache: the bare BPE.
func BenchmarkEncode(b *testing.B) {
	texts, nbytes := benchTexts(b)
	for _, mode := range []string{"cold", "warm", "nocache"} {
		b.Run(mode, func(b *testing.B) {
			tk := mistral(b, "tokenizer.model", true)
			if mode == "nocache" {
				tk = withoutCache(tk)
			}
			var ids []int32
			tokens := 0
			cpu0 := processCPU()
			for b.Loop() {
				if mode == "cold" {
					tk.resetCaches()
				}
				for _, s := range texts {
					ids = tk.AppendText(ids[:0], s, true)
					tokens += len(ids)
				}
			}
			cpu := (processCPU() - cpu0).Seconds()
			sec := b.Elapsed().Seconds()
			mb := float64(nbytes) * float64(b.N) / 1e6
			b.ReportMetric(mb/sec, "MB/s")
			b.ReportMetric(float64(tokens)/sec, "tokens/s")
			if cpu > 0 {
				// CPU time (user + system) of the whole process, GC included: comparable with
				// spm_encode's user + system time on a machine that other work keeps busy.
				b.ReportMetric(mb/cpu, "cpu-MB/s")
				b.ReportMetric(float64(tokens)/cpu, "cpu-tokens/s")
			}
		})
	}
}
