package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/ktoloader/ktoloader/tokenize"
)

var encodeFlags struct {
	tokenizer    string
	bos          bool
	spm          bool
	parseSpecial bool
}

var encodeCmd = &cobra.Command{
	Use:   "encode --tokenizer PATH [--bos] [--spm] [--parse-special]",
	Short: "Encode text into Mistral token ids: one JSON string per line in, one JSON id array per line out",
	Long: `encode reads standard input, one JSON string per line, and writes one JSON array of token
ids per line, in the same order (the format of shared/tools/hf_encode.mjs, so the two can be
diffed). Lines may be of any length.

--tokenizer names tokenizer.json, tokenizer.model, or a directory holding one (tokenizer.json
is preferred; both give the same ids for Mistral v0.3).

By default the ids are those of Hugging Face tokenizers on tokenizer.json (what transformers
and TRL train on): a "▁" is prepended to the text unless it starts with a space, and
control-token spellings such as "[INST]" or "</s>" stay plain characters.
  --parse-special  turn control-token spellings into their ids, as tokenizers does by default
  --spm            SentencePiece semantics (spm_encode, mistral_common): "▁" always prepended
  --bos            prepend <s> (id 1)

A line that is not a JSON string stops the run with an error naming the line (exit 1).`,
	Args: cobra.NoArgs,
	RunE: func(cmd *cobra.Command, _ []string) error {
		if encodeFlags.tokenizer == "" {
			return usagef("encode: --tokenizer PATH is required")
		}
		tk, err := tokenize.Load(encodeFlags.tokenizer)
		if err != nil {
			return err
		}
		tk.SetSPM(encodeFlags.spm)
		opt := tokenize.EncodeOptions{BOS: encodeFlags.bos, ParseSpecial: encodeFlags.parseSpecial}
		return encodeLines(cmd.InOrStdin(), cmd.OutOrStdout(), tk, opt)
	},
}

func init() {
	f := encodeCmd.Flags()
	f.StringVar(&encodeFlags.tokenizer, "tokenizer", "", "tokenizer.json, tokenizer.model, or a directory holding one")
	f.BoolVar(&encodeFlags.bos, "bos", false, "prepend <s>")
	f.BoolVar(&encodeFlags.spm, "spm", false, "SentencePiece semantics: always prepend the dummy \"▁\"")
	f.BoolVar(&encodeFlags.parseSpecial, "parse-special", false, "turn control-token spellings ([INST], </s>, ...) into their ids")
	rootCmd.AddCommand(encodeCmd)
}

// errNotJSONString is the reason for a bad encode input line.
var errNotJSONString = errors.New("not a JSON string")

// encodeLines encodes r line by line into w. Output is flushed whenever no more input is
// buffered, so encode also works as a co-process answering one line at a time.
func encodeLines(r io.Reader, w io.Writer, tk *tokenize.Tokenizer, opt tokenize.EncodeOptions) error {
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
		if jerr := json.Unmarshal(line, &text); jerr != nil {
			out.Flush()
			return fmt.Errorf("encode: line %d: %w: %v", lineNo, errNotJSONString, jerr)
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
