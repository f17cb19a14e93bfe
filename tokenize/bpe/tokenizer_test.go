package bpe

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/ktoloader/ktoloader/internal/shared"
)

// goldenFile is shared/refs/tokenizer_golden.json: ids made by Google SentencePiece
// (tokenizer.model, sp_*) and Hugging Face tokenizers (tokenizer.json, hf_*).
type goldenFile struct {
	Files map[string]string `json:"files"`
	Vocab struct {
		Size            int              `json:"size"`
		BosID           int32            `json:"bos_id"`
		EosID           int32            `json:"eos_id"`
		UnkID           int32            `json:"unk_id"`
		ControlTokenIDs map[string]int32 `json:"control_token_ids"`
	} `json:"vocab"`
	Cases []goldenCase `json:"cases"`
}

type goldenCase struct {
	Name      string   `json:"name"`
	Text      string   `json:"text"`
	SPIDs     []int32  `json:"sp_ids"`
	SPIDsBOS  []int32  `json:"sp_ids_bos"`
	SPPieces  []string `json:"sp_pieces"`
	SPDecode  string   `json:"sp_decode"`
	HFIDs     []int32  `json:"hf_ids"`
	HFIDsBOS  []int32  `json:"hf_ids_bos"`
	HFTokens  []string `json:"hf_tokens"`
	HFDecode  string   `json:"hf_decode"`
	SPEqualHF bool     `json:"sp_equals_hf"`
}

func loadGolden(t testing.TB) goldenFile {
	t.Helper()
	data, err := os.ReadFile(shared.Path(t, "refs", "tokenizer_golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g goldenFile
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatal(err)
	}
	if len(g.Cases) == 0 {
		t.Fatal("golden file has no cases")
	}
	return g
}

// mistralFiles are the two files of the real tokenizer, each loaded by its own parser.
var mistralFiles = []string{"tokenizer.model", "tokenizer.json"}

var (
	sharedTokMu sync.Mutex
	sharedToks  = map[string]*Tokenizer{}
)

// mistral returns the real tokenizer loaded from file (tokenizer.model or tokenizer.json) in
// the given mode, loading each combination once per test binary.
func mistral(t testing.TB, file string, spm bool) *Tokenizer {
	t.Helper()
	path := shared.Path(t, "tokenizers", "mistral-7b-v0.3", file)
	key := fmt.Sprint(file, spm)
	sharedTokMu.Lock()
	defer sharedTokMu.Unlock()
	if tk := sharedToks[key]; tk != nil {
		return tk
	}
	tk, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	tk.SetSPM(spm)
	sharedToks[key] = tk
	return tk
}

func hasControlText(tk *Tokenizer, s string) bool {
	at, _, _ := tk.m.findControl(s)
	return at >= 0
}

func TestGolden(t *testing.T) {
	g := loadGolden(t)
	for _, file := range mistralFiles {
		t.Run(file, func(t *testing.T) {
			hf, sp := mistral(t, file, false), mistral(t, file, true)
			checks, failed := 0, 0
			check := func(c goldenCase, what string, got, want any) {
				checks++
				if !equalJSON(got, want) {
					failed++
					t.Errorf("%s %s (%q):\n got %v\nwant %v", c.Name, what, abbrevText(c.Text), got, want)
				}
			}
			for _, c := range g.Cases {
				special := EncodeOptions{ParseSpecial: true}
				check(c, "hf_ids", hf.Encode(c.Text, special), c.HFIDs)
				check(c, "hf_ids_bos", hf.Encode(c.Text, EncodeOptions{BOS: true, ParseSpecial: true}), c.HFIDsBOS)
				check(c, "sp_ids", sp.Encode(c.Text, EncodeOptions{}), c.SPIDs)
				check(c, "sp_ids_bos", sp.Encode(c.Text, EncodeOptions{BOS: true}), c.SPIDsBOS)
				check(c, "sp_pieces", pieces(sp, c.SPIDs), c.SPPieces)
				check(c, "hf_tokens", pieces(hf, c.HFIDs), c.HFTokens)
				check(c, "hf_decode", hf.Decode(c.HFIDs), c.HFDecode)
				check(c, "sp_decode", sp.Decode(c.SPIDs), c.SPDecode)
				// Without ParseSpecial control spellings stay text; then the default mode
				// differs from SentencePiece only by the prefix of text starting with a space.
				if !startsWithSpace(c.Text + "x") {
					check(c, "default mode without ParseSpecial = sp_ids", hf.Encode(c.Text, EncodeOptions{}), c.SPIDs)
				}
				if !hasControlText(hf, c.Text) {
					check(c, "AppendText(first) = hf_ids", hf.AppendText(nil, c.Text, true), c.HFIDs)
				}
			}
			t.Logf("%s: %d cases, %d checks, %d passed", file, len(g.Cases), checks, checks-failed)
		})
	}
}

func pieces(tk *Tokenizer, ids []int32) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = tk.Piece(id)
	}
	return out
}

// equalJSON compares values as their JSON (a nil slice equals an empty one).
func equalJSON(a, b any) bool {
	norm := func(v any) string {
		j, _ := json.Marshal(v)
		if string(j) == "null" {
			return "[]"
		}
		return string(j)
	}
	return norm(a) == norm(b)
}

func abbrevText(s string) string {
	if r := []rune(s); len(r) > 60 {
		return string(r[:60]) + "…"
	}
	return s
}

// TestAfterControlNoPrefix: text that follows a control token is not at offset 0, so it gets
// no "▁" (hf golden literal_inst_at_start: "[INST] at start" -> [3, ▁at, ▁start], where
// "▁at" comes from the space, not from a prefix).
func TestAfterControlNoPrefix(t *testing.T) {
	tk := mistral(t, "tokenizer.json", false)
	got := tk.Encode("<s>hello</s>", EncodeOptions{ParseSpecial: true})
	hello := tk.AppendText(nil, "hello", false)
	want := append(append([]int32{1}, hello...), 2)
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if slices.Equal(hello, tk.AppendText(nil, "hello", true)) {
		t.Fatal("first=true and first=false give the same ids for a word: no prefix applied")
	}
}

func TestVocabAndControls(t *testing.T) {
	g := loadGolden(t)
	for _, file := range mistralFiles {
		tk := mistral(t, file, false)
		if tk.VocabSize() != g.Vocab.Size || tk.BOS() != g.Vocab.BosID || tk.EOS() != g.Vocab.EosID {
			t.Errorf("%s: size %d bos %d eos %d, want %d %d %d", file, tk.VocabSize(), tk.BOS(), tk.EOS(),
				g.Vocab.Size, g.Vocab.BosID, g.Vocab.EosID)
		}
		for name, id := range g.Vocab.ControlTokenIDs {
			got, ok := tk.ControlID(name)
			isControl := id <= 770
			if ok != isControl || (ok && got != id) {
				t.Errorf("%s: ControlID(%q) = %d, %v; golden id %d", file, name, got, ok, id)
			}
			if tk.Piece(id) != name {
				t.Errorf("%s: Piece(%d) = %q, want %q", file, id, tk.Piece(id), name)
			}
		}
		if want := g.Files[file+"_sha256"]; tk.SHA256() != want {
			t.Errorf("%s: SHA256 %s, want %s", file, tk.SHA256(), want)
		}
	}
}

// TestModelAndJSONAgree: tokenizer.model (SentencePiece score order) and tokenizer.json
// (tokenizers merge ranks) must give identical ids in both modes, on the goldens, on runs of
// whitespace around words, and on every message text of the Nexus data when present.
func TestModelAndJSONAgree(t *testing.T) {
	g := loadGolden(t)
	var texts []string
	for _, c := range g.Cases {
		texts = append(texts, c.Text)
	}
	for n := 1; n <= 40; n++ {
		run := strings.Repeat(" ", n)
		for _, s := range []string{"x", "the", "\n", "😀", "1", "▁", ".", "\t"} {
			texts = append(texts, run+s, s+run, s+run+s, run+s+run+"▁"+run)
		}
	}
	texts = append(texts, nexusTexts(t, 0)...)
	for _, spm := range []bool{false, true} {
		a, b := mistral(t, "tokenizer.model", spm), mistral(t, "tokenizer.json", spm)
		bad := 0
		for _, s := range texts {
			x, y := a.Encode(s, EncodeOptions{}), b.Encode(s, EncodeOptions{})
			if !slices.Equal(x, y) {
				bad++
				if bad <= 5 {
					t.Errorf("spm=%v %q:\n model %v\n json  %v", spm, abbrevText(s), x, y)
				}
			}
		}
		t.Logf("spm=%v: %d texts, %d differ", spm, len(texts), bad)
	}
}

// nexusTexts returns the message contents and tool-call arguments of the Nexus KTO data (at
// most limit texts when limit > 0), or nothing when the file is absent.
func nexusTexts(t testing.TB, limit int) []string {
	t.Helper()
	dir := shared.Find()
	if dir == "" {
		return nil
	}
	f, err := os.Open(filepath.Join(dir, "data", "nexus", "behavior_merged_kto_v1.5_balanced.jsonl"))
	if err != nil {
		return nil
	}
	defer f.Close()
	var texts []string
	r := bufio.NewReaderSize(f, 1<<20)
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 {
			var row struct {
				Conversations []struct {
					Content   *string `json:"content"`
					ToolCalls []struct {
						Function struct {
							Arguments string `json:"arguments"`
						} `json:"function"`
					} `json:"tool_calls"`
				} `json:"conversations"`
			}
			if err := json.Unmarshal(line, &row); err != nil {
				t.Fatalf("nexus data: %v", err)
			}
			for _, m := range row.Conversations {
				if m.Content != nil && *m.Content != "" {
					texts = append(texts, *m.Content)
				}
				for _, tc := range m.ToolCalls {
					texts = append(texts, tc.Function.Arguments)
				}
			}
		}
		if err != nil || (limit > 0 && len(texts) >= limit) {
			break
		}
	}
	return texts
}

// TestConcurrentEncode: many goroutines sharing one Tokenizer get what one goroutine gets.
func TestConcurrentEncode(t *testing.T) {
	tk := mistral(t, "tokenizer.json", false)
	texts := nexusTexts(t, 400)
	if len(texts) == 0 {
		g := loadGolden(t)
		for _, c := range g.Cases {
			texts = append(texts, c.Text)
		}
	}
	want := make([][]int32, len(texts))
	for i, s := range texts {
		want[i] = tk.Encode(s, EncodeOptions{})
	}
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for k := range texts {
				i := (k*7 + w*13) % len(texts)
				if got := tk.Encode(texts[i], EncodeOptions{}); !slices.Equal(got, want[i]) {
					errs <- fmt.Sprintf("worker %d text %d differs", w, i)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestLoadDirectory(t *testing.T) {
	dir := shared.Path(t, "tokenizers", "mistral-7b-v0.3")
	tk, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "tokenizer.json"); tk.Name() != want {
		t.Errorf("Name() = %q, want %q (tokenizer.json preferred)", tk.Name(), want)
	}
	empty := t.TempDir()
	if _, err := Load(empty); !errors.Is(err, ErrNoTokenizerFile) {
		t.Errorf("empty directory: %v, want ErrNoTokenizerFile", err)
	}
	if _, err := Load(filepath.Join(empty, "missing.model")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want os.ErrNotExist", err)
	}
}

// TestLoadBrokenFiles: an empty or non-JSON tokenizer file is refused as malformed, naming
// the file and what is wrong with it (an empty tokenizer.json used to be read as an empty
// SentencePiece model: "trainer_spec.model_type: unsupported").
func TestLoadBrokenFiles(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, content, want string }{
		{"tokenizer.json", "", "the file is empty"},
		{"tokenizer.model", " \n", "the file is empty"},
		{"tokenizer.json", "not json", "not JSON"},
		{"tokenizer.json", `{"model": `, "not JSON"},
		{"tokenizer.json", "[1, 2]", "a JSON array"},
	} {
		sub := filepath.Join(dir, fmt.Sprintf("case%d", len(tc.content)))
		os.MkdirAll(sub, 0o755)
		p := filepath.Join(sub, tc.name)
		if err := os.WriteFile(p, []byte(tc.content), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, arg := range []string{p, sub} { // the file, and the directory holding it
			_, err := Load(arg)
			var le *LoadError
			if !errors.Is(err, ErrMalformedTokenizer) || !errors.As(err, &le) || le.Path != p || le.Field != "" ||
				!strings.Contains(err.Error(), tc.want) {
				t.Errorf("Load(%s) with %q: %v; want ErrMalformedTokenizer naming %s and saying %q", arg, tc.content, err, p, tc.want)
			}
		}
	}
}

// TestLoadRefusesVariants edits the real tokenizer.json into forms this BPE does not
// implement: each must be refused naming the field, never loaded into a tokenizer that
// disagrees with tokenizers.
func TestLoadRefusesVariants(t *testing.T) {
	data, err := os.ReadFile(shared.Path(t, "tokenizers", "mistral-7b-v0.3", "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, field string
		edit        func(m map[string]any)
		want        error
	}{
		{"prepend always", "pre_tokenizer.prepend_scheme", func(m map[string]any) {
			m["pre_tokenizer"].(map[string]any)["prepend_scheme"] = "always"
		}, ErrUnsupportedTokenizer},
		{"nfkc normalizer", "normalizer", func(m map[string]any) {
			m["normalizer"] = map[string]any{"type": "NFKC"}
		}, ErrUnsupportedTokenizer},
		{"no byte fallback", "model.byte_fallback", func(m map[string]any) {
			m["model"].(map[string]any)["byte_fallback"] = false
		}, ErrUnsupportedTokenizer},
		{"unigram", "model.type", func(m map[string]any) {
			m["model"].(map[string]any)["type"] = "Unigram"
		}, ErrUnsupportedTokenizer},
		{"merge of unknown piece", "model.merges[0]", func(m map[string]any) {
			m["model"].(map[string]any)["merges"].([]any)[0] = "qqq zzz"
		}, ErrMalformedTokenizer},
		{"non-special added token", "added_tokens[3]", func(m map[string]any) {
			m["added_tokens"].([]any)[3].(map[string]any)["special"] = false
		}, ErrUnsupportedTokenizer},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var m map[string]any
			if err := json.Unmarshal(data, &m); err != nil {
				t.Fatal(err)
			}
			c.edit(m)
			edited, _ := json.Marshal(m)
			_, err := LoadHFJSON(strings.NewReader(string(edited)))
			var le *LoadError
			if !errors.Is(err, c.want) || !errors.As(err, &le) || le.Field != c.field {
				t.Fatalf("got %v, want %v naming %s", err, c.want, c.field)
			}
		})
	}
	if _, err := LoadHFJSON(strings.NewReader(string(data[:len(data)/2]))); !errors.Is(err, ErrMalformedTokenizer) {
		t.Errorf("truncated JSON: %v", err)
	}
}

func TestLoadModelProtoTruncated(t *testing.T) {
	data, err := os.ReadFile(shared.Path(t, "tokenizers", "mistral-7b-v0.3", "tokenizer.model"))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, 100, len(data) / 2, len(data) - 1} {
		if _, err := LoadModelProto(strings.NewReader(string(data[:n]))); !errors.Is(err, ErrMalformedTokenizer) && !errors.Is(err, ErrUnsupportedTokenizer) {
			t.Errorf("first %d bytes: %v, want a load error", n, err)
		}
	}
}
