package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/ktoloader/ktoloader/internal/shared"
	"github.com/ktoloader/ktoloader/tokenize"
)

type encodeGolden struct {
	Cases []struct {
		Name     string  `json:"name"`
		Text     string  `json:"text"`
		SPIDs    []int32 `json:"sp_ids"`
		SPIDsBOS []int32 `json:"sp_ids_bos"`
		HFIDs    []int32 `json:"hf_ids"`
		HFIDsBOS []int32 `json:"hf_ids_bos"`
	} `json:"cases"`
}

// runEncode runs `ktoloader encode args…` with stdin holding in and returns the exit code
// and stdout.
func runEncode(t *testing.T, in string, args ...string) (int, string) {
	t.Helper()
	code, out, _ := runIO(t, in, append([]string{"encode"}, args...)...)
	return code, out
}

// TestEncodeGolden feeds every golden text through `ktoloader encode` and compares with the
// ids of Hugging Face tokenizers (hf_*, with --parse-special) and SentencePiece (sp_*, --spm).
func TestEncodeGolden(t *testing.T) {
	data, err := os.ReadFile(shared.Path(t, "refs", "tokenizer_golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g encodeGolden
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatal(err)
	}
	var in strings.Builder
	for _, c := range g.Cases {
		line, _ := json.Marshal(c.Text)
		in.Write(line)
		in.WriteByte('\n')
	}
	for _, file := range []string{"tokenizer.json", "tokenizer.model"} {
		tok := shared.Path(t, "tokenizers", "mistral-7b-v0.3", file)
		for _, mode := range []struct {
			name string
			args []string
			want func(i int) []int32
		}{
			{"hf", []string{"--bos=false", "--spm=false", "--parse-special"}, func(i int) []int32 { return g.Cases[i].HFIDs }},
			{"hf_bos", []string{"--bos", "--spm=false", "--parse-special"}, func(i int) []int32 { return g.Cases[i].HFIDsBOS }},
			{"sp", []string{"--bos=false", "--spm", "--parse-special=false"}, func(i int) []int32 { return g.Cases[i].SPIDs }},
			{"sp_bos", []string{"--bos", "--spm", "--parse-special=false"}, func(i int) []int32 { return g.Cases[i].SPIDsBOS }},
		} {
			code, out := runEncode(t, in.String(), append([]string{"--tokenizer", tok}, mode.args...)...)
			if code != 0 {
				t.Fatalf("%s %s: exit %d", file, mode.name, code)
			}
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if len(lines) != len(g.Cases) {
				t.Fatalf("%s %s: %d output lines for %d inputs", file, mode.name, len(lines), len(g.Cases))
			}
			for i, l := range lines {
				want, _ := json.Marshal(mode.want(i))
				if string(want) == "null" {
					want = []byte("[]")
				}
				if l != string(want) {
					t.Errorf("%s %s %s: got %s, want %s", file, mode.name, g.Cases[i].Name, l, want)
				}
			}
		}
	}
}

func TestEncodeLines(t *testing.T) {
	tk, err := tokenize.Load(shared.Path(t, "tokenizers", "mistral-7b-v0.3", "tokenizer.model"))
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("word ", 40000) // a 200 kB line: past any 64 KiB scanner limit
	var out bytes.Buffer
	in := `"Hello world"` + "\r\n" + `""` + "\n" + mustJSON(long) // last line without newline
	if err := encodeLines(strings.NewReader(in), &out, tk, tokenize.EncodeOptions{}, false); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out.String(), "\n")
	if len(lines) != 4 || lines[0] != "[23325,2294]" || lines[1] != "[]" || lines[3] != "" {
		t.Fatalf("unexpected output %.200q", out.String())
	}
	if want := string(appendIDs(nil, tk.Encode(long, tokenize.EncodeOptions{}))); lines[2]+"\n" != want {
		t.Fatalf("long line: got %.80s…, want %.80s…", lines[2], want)
	}
	okIDs := string(appendIDs(nil, tk.Encode("ok", tokenize.EncodeOptions{})))

	for _, bad := range []string{`"ok"` + "\n" + `42` + "\n", `"ok"` + "\n\n", `"ok"` + "\n" + `"a" "b"` + "\n", `"ok"` + "\n" + `"unterminated` + "\n"} {
		out.Reset()
		err := encodeLines(strings.NewReader(bad), &out, tk, tokenize.EncodeOptions{}, false)
		if !errors.Is(err, errNotJSONString) || !strings.Contains(err.Error(), "line 2") {
			t.Errorf("%q: %v, want errNotJSONString naming line 2", bad, err)
		}
		if out.String() != okIDs {
			t.Errorf("%q: output before the error %q, want the first line's ids", bad, out.String())
		}
	}
}

func mustJSON(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestEncodeExitCodes(t *testing.T) {
	tok := shared.Path(t, "tokenizers", "mistral-7b-v0.3")
	if code, _ := runEncode(t, `"x"`+"\n", "--tokenizer", ""); code != 2 {
		t.Errorf("no --tokenizer: exit %d, want 2", code)
	}
	if code, _ := runEncode(t, `"x"`+"\n", "--tokenizer", tok, "--bogus"); code != 2 {
		t.Errorf("unknown flag: exit %d, want 2", code)
	}
	if code, _ := runEncode(t, `"x"`+"\n", "--tokenizer", t.TempDir()); code != 1 {
		t.Errorf("directory without a tokenizer: exit %d, want 1", code)
	}
	if code, _ := runEncode(t, "not json\n", "--tokenizer", tok, "--bos=false", "--spm=false", "--parse-special=false"); code != 1 {
		t.Errorf("bad line: exit %d, want 1", code)
	}
	code, out := runEncode(t, `"[INST] x"`+"\n", "--tokenizer", tok, "--bos=false", "--spm=false", "--parse-special=false")
	if code != 0 || strings.HasPrefix(out, "[3,") {
		t.Errorf("without --parse-special [INST] must stay text: exit %d, %s", code, out)
	}
}

// TestEncodeText checks --text against --json: each raw line must give the ids of the JSON
// string holding the same text (the --json path is the one checked against the goldens), and
// on Mistral's tokenizer "Hello world" must be Hugging Face's [23325, 2294].
func TestEncodeText(t *testing.T) {
	lines := []string{"Hello world", "", "[INST] typed by a user", `say "hi" \n not a newline`, "héllo 日本語 ✓", "  leading spaces"}
	var text, js strings.Builder
	for i, l := range lines {
		text.WriteString(l)
		if i == 1 {
			text.WriteString("\r\n") // CRLF is a line ending, not text
		} else {
			text.WriteString("\n")
		}
		js.WriteString(mustJSON(l) + "\n")
	}
	code, fromText := runEncode(t, text.String(), "--tokenizer", demoTokenizer, "--text")
	if code != 0 {
		t.Fatalf("--text: exit %d", code)
	}
	code, fromJSON := runEncode(t, js.String(), "--tokenizer", demoTokenizer, "--json")
	if code != 0 {
		t.Fatalf("--json: exit %d", code)
	}
	if fromText != fromJSON || strings.Count(fromText, "\n") != len(lines) {
		t.Errorf("--text gave\n%s\n--json gave\n%s", fromText, fromJSON)
	}

	if code, _ := runEncode(t, "x\n", "--tokenizer", demoTokenizer, "--text", "--json"); code != 2 {
		t.Errorf("--text with --json: exit %d, want 2", code)
	}
	if code, _ := runEncode(t, "ok\n\xff\xfe\n", "--tokenizer", demoTokenizer, "--text"); code != 1 {
		t.Errorf("--text with invalid UTF-8: exit %d, want 1", code)
	}

	if tok := shared.Find(); tok != "" {
		code, out := runEncode(t, "Hello world\n", "--tokenizer", shared.Path(t, "tokenizers", "mistral-7b-v0.3"), "--text")
		if code != 0 || out != "[23325,2294]\n" {
			t.Errorf("Mistral --text Hello world: exit %d, %q, want [23325,2294]", code, out)
		}
	}
}
