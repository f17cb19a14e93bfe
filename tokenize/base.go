package tokenize

import (
	"io"

	"github.com/ktoloader/ktoloader/tokenize/bpe"
)

// The base tokenizer (text → ids, the level torchtune calls the base tokenizer) is package
// tokenize/bpe; the template, the segments and the example assembly here run on top of it.
// These names keep tokenize's API, which the pipeline, the commands and the report use, as
// it was.
type (
	Tokenizer     = bpe.Tokenizer
	TextEncoder   = bpe.TextEncoder
	EncodeOptions = bpe.EncodeOptions
	LoadError     = bpe.LoadError
)

// The loaders' sentinel errors (bpe's).
var (
	ErrMalformedTokenizer   = bpe.ErrMalformedTokenizer
	ErrUnsupportedTokenizer = bpe.ErrUnsupportedTokenizer
	ErrNoTokenizerFile      = bpe.ErrNoTokenizerFile
)

// Load is bpe.Load.
func Load(path string) (*Tokenizer, error) { return bpe.Load(path) }

// LoadModelProto is bpe.LoadModelProto.
func LoadModelProto(r io.Reader) (*Tokenizer, error) { return bpe.LoadModelProto(r) }

// LoadHFJSON is bpe.LoadHFJSON.
func LoadHFJSON(r io.Reader) (*Tokenizer, error) { return bpe.LoadHFJSON(r) }
