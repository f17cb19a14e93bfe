package bpe

import (
	"sync"
	"testing"

	"github.com/ktoloader/ktoloader/internal/shared"
)

var (
	mistralOnce sync.Once
	mistralTok  *Tokenizer
	mistralErr  error
)

// realTokenizer loads shared/tokenizers/mistral-7b-v0.3 once (skips when absent).
func realTokenizer(t *testing.T) *Tokenizer {
	t.Helper()
	dir := shared.Path(t, "tokenizers", "mistral-7b-v0.3")
	mistralOnce.Do(func() { mistralTok, mistralErr = Load(dir) })
	if mistralErr != nil {
		t.Fatalf("Load(%s): %v", dir, mistralErr)
	}
	return mistralTok
}
