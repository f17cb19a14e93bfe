// Package safetensors reads and writes the safetensors format
// (https://github.com/huggingface/safetensors) for the GomlX trainer: it loads Hugging Face
// model directories (model.safetensors, or shards named by model.safetensors.index.json)
// and writes PEFT adapters and merged models the way Python's safetensors and transformers'
// save_pretrained lay them out, byte for byte where the format allows.
//
// Reading maps the file read-only (syscall.Mmap on unix; a whole-file read elsewhere) and
// validates the whole header before it returns: a hostile header (a length of 2^63, shapes
// whose product overflows, offsets that overlap, leave gaps or point past the end of the
// file) is refused before anything is allocated for it, and every error is an *Error naming
// the file and, when known, the tensor, with a sentinel (ErrHeader, ErrTruncated, ...) for
// errors.Is. Data returns views of the mapping: no second host copy of the weights.
//
// Writing streams: a tensor may hand over a Write function instead of its bytes, so that a
// merged 7B model is never held in memory, and every file is written under a temporary
// name, synced and renamed into place.
//
// The package imports only the standard library and internal/jsonstr (the JSON string
// quoting of its headers and index files). The header parser is written here rather
// than taken from github.com/nlpodyssey/safetensors: that library returns untyped errors
// (a truncated file and trailing bytes are one "metadata incomplete buffer"), cannot report
// which tensor runs past the end, keeps the last of duplicate tensor names silently (the
// format forbids duplicates), and refuses the F8 dtypes. Its SerializeToWriter needs each
// tensor as one byte slice (View.Data), and writes in place rather than atomically; the
// writer here is this package's own.
package safetensors
