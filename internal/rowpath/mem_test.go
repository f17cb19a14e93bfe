package rowpath

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ktoloader/ktoloader/internal/shared"
	"github.com/ktoloader/ktoloader/kto"
	"github.com/ktoloader/ktoloader/loader"
	"github.com/ktoloader/ktoloader/tokenize"
)

// bigToolRow is a row whose one tool message holds about n bytes of content: words
// separated by spaces (spaced) or one run without any (a single BPE chunk).
func bigToolRow(n int, spaced bool) []byte {
	words := []string{"alpha", "beta", "gamma", "delta", "x1", "42", "{", "}", "value", "name:"}
	var b strings.Builder
	b.Grow(n + 16)
	seed := uint32(1)
	for b.Len() < n {
		seed = seed*1664525 + 1013904223
		b.WriteString(words[seed>>28%uint32(len(words))])
		if spaced {
			b.WriteByte(' ')
		}
	}
	content, _ := json.Marshal(b.String())
	return []byte(`{"conversations":[{"role":"user","content":"look it up"},` +
		`{"role":"assistant","content":null,"tool_calls":[{"id":"abcDEF123","type":"function","function":{"name":"lookup","arguments":"{}"}}]},` +
		`{"role":"tool","tool_call_id":"abcDEF123","content":` + string(content) + `},` +
		`{"role":"assistant","content":"done"}],"label":true,"behavior":"b"}`)
}

// peakHeap runs fn and returns the most heap it saw in use (live and not yet collected
// objects), sampled every millisecond with the collector set tight so garbage stays small.
func peakHeap(fn func()) uint64 {
	runtime.GC()
	old := debug.SetGCPercent(5)
	defer debug.SetGCPercent(old)
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() uint64 { metrics.Read(sample); return sample[0].Value.Uint64() }
	base := read()
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if v := read(); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	fn()
	if v := read(); v > peak.Load() {
		peak.Store(v)
	}
	close(stop)
	<-done
	if p := peak.Load(); p > base {
		return p - base
	}
	return 0
}

func realMistral(t *testing.T) *tokenize.Mistral {
	t.Helper()
	tok, err := tokenize.Load(shared.Path(t, "tokenizers", "mistral-7b-v0.3", "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := tokenize.NewMistral(tok, tokenize.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestRowMemoryKeepEnd: one row with a huge tool message under --truncate keep-end costs a
// small multiple of its line, not of its token count times the BPE's working set.
func TestRowMemoryKeepEnd(t *testing.T) {
	size := 8 << 20
	if testing.Short() {
		size = 2 << 20
	}
	if s := os.Getenv("KTOLOADER_ROWMEM_BYTES"); s != "" {
		var n int
		if _, err := fmt.Sscan(s, &n); err == nil && n > 0 {
			size = n
		}
	}
	m := realMistral(t)
	cfg := kto.Config{MaxLen: 2048, Truncate: kto.TruncateKeepEnd}
	p, err := New(Config{Loader: loader.Config{MaxLineBytes: 1 << 30}, Mistral: m, KTO: &cfg})
	if err != nil {
		t.Fatal(err)
	}
	for _, spaced := range rowMemCases() {
		line := bigToolRow(size, spaced)
		var res Result
		peak := peakHeap(func() { res = p.Line(line, "big.jsonl", 1, nil) })
		if res.Reject != nil {
			t.Fatalf("spaced=%v: rejected: %v", spaced, res.Reject)
		}
		if n := len(res.Example.PromptIDs) + len(res.Example.CompletionIDs); n > cfg.MaxLen || res.Trimmed == 0 {
			t.Fatalf("spaced=%v: %d tokens after keep-end, %d trimmed", spaced, n, res.Trimmed)
		}
		ratio := float64(peak) / float64(len(line))
		t.Logf("spaced=%v: line %d bytes, peak heap %d bytes (%.1f× the line)", spaced, len(line), peak, ratio)
		// The aim is 10× (issue 13). One chunk without spaces measured 8.6–10.0× here (8.5×
		// at 50 MB): the raw line's copy and the content (1× each), the BPE's 16-bit symbols
		// and 16-bit ranks (2× each), the output ids (4 bytes a token, ~2×); it was
		// 10.8–13.5× with 32-bit symbols and ids grown by append, 81× before mergeLarge. The
		// bound leaves room for the sampler's noise and keeps that from coming back.
		if ratio > 12 {
			t.Errorf("spaced=%v: peak heap %.1f× the line, want ≤ 12× (aim 10×)", spaced, ratio)
		}
	}
}

// rowMemCases: both kinds of huge text, or one ($KTOLOADER_ROWMEM_SPACED=true|false, for profiles).
func rowMemCases() []bool {
	switch os.Getenv("KTOLOADER_ROWMEM_SPACED") {
	case "true":
		return []bool{true}
	case "false":
		return []bool{false}
	}
	return []bool{true, false}
}
