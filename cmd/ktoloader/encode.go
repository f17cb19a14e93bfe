package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/ktoloader/ktoloader/tokenize"
)

type encodeFlags struct {
	tokenizer    string
	bos          bool
	spm          bool
	parseSpecial bool
	text         bool
	json         bool
}

func newEncodeCmd() *cobra.Command {
	var f encodeFlags
	cmd := &cobra.Command{
		Use:   "encode --tokenizer PATH [--json|--text] [--bos] [--spm] [--parse-special]",
		Short: "Encode text into Mistral token ids: one JSON string (or, with --text, one line of text) in, one JSON id array out, per line",
		Long: `encode reads standard input line by line and writes one JSON array of token ids per line,
in the same order. Lines may be of any length.
  --json  (the default) each line is a JSON string, "Hello\nworld": any text, newlines
          included (the format of shared/tools/hf_encode.mjs, so the two can be diffed)
  --text  each line is the text itself, without its line ending ("\n" or "\r\n"):
          echo 'Hello world' | ktoloader encode --tokenizer T --text

--tokenizer names tokenizer.json, tokenizer.model, or a directory holding one (tokenizer.json
is preferred; both give the same ids for Mistral v0.3).

By default the ids are those of Hugging Face tokenizers on tokenizer.json (what transformers
and TRL train on): a "▁" is prepended to the text unless it starts with a space, and
control-token spellings such as "[INST]" or "</s>" stay plain characters.
  --parse-special  turn control-token spellings into their ids, as tokenizers does by default
  --spm            SentencePiece semantics (spm_encode, mistral_common): "▁" always prepended
  --bos            prepend <s> (id 1)

With --json, a line that is not a JSON string stops the run with an error naming the line
(exit 1); pass --text to encode plain text.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.tokenizer == "" {
				return usagef("encode: --tokenizer PATH is required")
			}
			if f.text && f.json {
				return usagef("encode: --text and --json exclude each other")
			}
			tk, err := tokenize.Load(f.tokenizer)
			if err != nil {
				return err
			}
			tk.SetSPM(f.spm)
			opt := tokenize.EncodeOptions{BOS: f.bos, ParseSpecial: f.parseSpecial}
			return encodeLines(cmd.InOrStdin(), cmd.OutOrStdout(), tk, opt, f.text)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.tokenizer, "tokenizer", "", "tokenizer.json, tokenizer.model, or a directory holding one")
	fl.BoolVar(&f.bos, "bos", false, "prepend <s>")
	fl.BoolVar(&f.spm, "spm", false, "SentencePiece semantics: always prepend the dummy \"▁\"")
	fl.BoolVar(&f.parseSpecial, "parse-special", false, "turn control-token spellings ([INST], </s>, ...) into their ids")
	fl.BoolVar(&f.json, "json", false, "each input line is a JSON string (the default)")
	fl.BoolVar(&f.text, "text", false, "each input line is raw text, encoded without its line ending")
	return cmd
}

// errNotJSONString is the reason for a bad encode input line.
var errNotJSONString = errors.New("not a JSON string")

// encodeLines encodes r line by line into w: each line a JSON string, or with raw the text
// itself. Output is flushed whenever no more input is buffered, so encode also works as a
// co-process answering one line at a time.
func encodeLines(r io.Reader, w io.Writer, tk *tokenize.Tokenizer, opt tokenize.EncodeOptions, raw bool) error {
	in := bufio.NewReaderSize(r, 1<<16)
	out := bufio.NewWriterSize(w, 1<<16)
	var buf []byte
	for lineNo := 1; ; lineNo++ {
		line, err := readLine(in)
		if err == io.EOF && len(line) == 0 {
			return out.Flush()
		}
		if err != nil && err != io.EOF {
			out.Flush()
			return fmt.Errorf("encode: reading line %d: %w", lineNo, err)
		}
		var text string
		if raw {
			if !utf8.Valid(line) {
				out.Flush()
				return fmt.Errorf("encode: line %d: not valid UTF-8 text", lineNo)
			}
			text = string(line)
		} else if jerr := json.Unmarshal(line, &text); jerr != nil {
			out.Flush()
			return fmt.Errorf("encode: line %d: %w: %v (pass --text for plain text)", lineNo, errNotJSONString, jerr)
		}
		buf = appendIDs(buf[:0], tk.Encode(text, opt))
		if _, werr := out.Write(buf); werr != nil {
			return fmt.Errorf("encode: writing: %w", werr)
		}
		if in.Buffered() == 0 {
			if werr := out.Flush(); werr != nil {
				return fmt.Errorf("encode: writing: %w", werr)
			}
		}
		if err == io.EOF {
			return out.Flush()
		}
	}
}

// readLine returns the next line without its "\n" (or "\r\n"), however long; io.EOF comes
// with the last line when it has no newline, or alone at the end.
func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		long := append([]byte(nil), line...)
		for err == bufio.ErrBufferFull {
			line, err = r.ReadSlice('\n')
			long = append(long, line...)
		}
		line = long
	}
	if err != nil && err != io.EOF {
		return nil, err
	}
	n := len(line)
	if n > 0 && line[n-1] == '\n' {
		n--
		if n > 0 && line[n-1] == '\r' {
			n--
		}
	}
	return line[:n], err
}

// appendIDs writes ids as a compact JSON array and a newline.
func appendIDs(b []byte, ids []int32) []byte {
	b = append(b, '[')
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(id), 10)
	}
	return append(b, ']', '\n')
}
