package pipeline

import (
	"fmt"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/internal/rowpath"
	"github.com/ktoloader/ktoloader/kto"
	"github.com/ktoloader/ktoloader/loader"
	"github.com/ktoloader/ktoloader/tokenize"
)

// passOneResult is what pass one keeps in memory: per written example its planning key and
// lengths (as counts), and the notes.
type passOneResult struct {
	keys    []kto.Key // up to Config.PartitionSize of them; then store holds them all
	store   *keyStore
	lens    tokenHists
	notes   map[string]int64
	skipped int64 // rows of other shards
}

// worked is a worker's output for one valid row of this shard.
type worked struct {
	rec        []byte            // the spill record
	big        *tokenize.Example // instead of rec, for a record of bigRecord bytes or more: streamed by emit
	key        kto.Key
	plen, clen int
	repaired   int
	textTools  bool
	trimmed    bool
	unpaired   int  // tool messages whose tool_call_id no earlier call carries
	largeText  bool // a text over export.MaxTextBytes (NoteLargeText)
	other      bool // the row belongs to another shard: skipped, not counted
}

// NoteSkippedOtherShard is the manifest note (counts.notes) that counts the input rows a
// sharded run left to the other shards. They are not read, written or rejected by this run,
// so read = written + rejected holds per run, and summed over the N runs of one input.
const NoteSkippedOtherShard = "skipped_other_shard"

// Manifest notes for tool results that answer no call: the template renders them (the id is
// kept, or repaired when the template would refuse it), but the pairing is lost, so report
// flags them.
const (
	NoteUnpairedToolResults     = "unpaired_tool_results"
	NoteRowsWithUnpairedResults = "rows_with_unpaired_tool_results"
)

// NoteLargeText counts the rows with a text (prompt, completion, behavior, source) over
// export.MaxTextBytes. A run with any writes its text columns without min/max statistics
// (export.WriterOptions.LargeText); merge reads the note back (HasLargeText) so its files
// follow the same rule.
const NoteLargeText = "rows_with_large_text"

// HasLargeText reports whether a run's manifest counts rows with a large text.
func HasLargeText(m *export.Manifest) bool { return m.Counts.Notes[NoteLargeText] > 0 }

// passOne streams every input through the workers: each record is parsed, validated,
// rendered, placed in a shard, tokenized, truncated, keyed and encoded for the spill on a
// worker; in input order, this goroutine then counts it, writes its reject or appends its
// record to the spill and keeps its key.
func passOne(cfg Config, mistral *tokenize.Mistral, sp *spill, rej *Rejects, m *export.Manifest) (_ *passOneResult, err error) {
	p := &passOneResult{notes: map[string]int64{}}
	ktoCfg := cfg.KTO
	path, err := rowpath.New(rowpath.Config{Loader: cfg.Loader, Mistral: mistral, KTO: &ktoCfg, Lean: true})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil && p.store != nil {
			p.store.Close()
		}
	}()
	partitionSize := cfg.PartitionSize
	if partitionSize <= 0 {
		partitionSize = DefaultPartitionSize
	}
	// keep records an example's key: in RAM up to partitionSize keys, then, for the whole
	// run, in the key store on disk (partition.go).
	keep := func(k kto.Key, l loc) error {
		if p.store == nil && len(p.keys) < partitionSize {
			p.keys = append(p.keys, k)
			return nil
		}
		if p.store == nil {
			ks, err := newKeyStore(cfg.Out)
			if err != nil {
				return err
			}
			p.store = ks
			for i, k := range p.keys {
				if err := ks.add(k, sp.locOf(i)); err != nil {
					return err
				}
			}
			p.keys = nil
			sp.dropIndex()
		}
		return p.store.add(k, l)
	}
	sharded := cfg.NumShards > 1
	mine := func(h uint64) bool { return !sharded || shardOf(h, cfg.NumShards) == cfg.ShardIndex }
	// Behavior strings are interned: a key per example must not hold its own copy (nor keep
	// the parsed row's memory alive).
	behaviors := map[string]string{}
	intern := func(s string) string {
		if t, ok := behaviors[s]; ok {
			return t
		}
		behaviors[s] = s
		return s
	}
	var seen int64 // records handled, this shard's or not (for Progress)
	for _, in := range cfg.Inputs {
		r, err := in.Open(cfg.Loader)
		if err != nil {
			return nil, err
		}
		name := r.Name()
		work := func(it *item[worked]) {
			var res rowpath.Result
			if it.bad != nil {
				res.Reject = it.bad
			} else {
				keep := func(rd *tokenize.Rendering) bool { return !sharded || mine(groupOf(rd)) }
				res = path.LineOwned(it.data, name, it.line, keep)
				it.data = nil // the row (or its error) holds it as Raw
			}
			switch {
			case res.Skipped:
				it.out.other = true
				return
			case res.Reject != nil:
				it.bad = res.Reject
				if res.Rendering == nil { // refused before a group is known: place it by its line
					it.out.other = !mine(rawHash(res.Reject.Raw))
				}
				return
			}
			ex := &res.Example
			w := &it.out
			w.key = kto.KeyOf(ex)
			if size := recordSize(ex); size < bigRecord {
				w.rec = encodeExample(make([]byte, 0, size), ex)
			} else {
				w.big = ex // its record would be a second copy of its texts
			}
			w.plen, w.clen = len(ex.PromptIDs), len(ex.CompletionIDs)
			w.repaired, w.textTools, w.trimmed = ex.RepairedIDs, ex.TextWithTools, res.Trimmed > 0
			w.unpaired = ex.UnpairedResults
			w.largeText = export.IsLargeText(max(len(ex.Prompt), len(ex.Completion), len(ex.Behavior), len(ex.Source.String())))
		}
		emit := func(it *item[worked]) error {
			seen++
			if cfg.Progress != nil {
				cfg.Progress(seen)
			}
			if it.out.other {
				p.skipped++
				return nil
			}
			re := it.bad
			m.Counts.Read++
			if re != nil {
				m.Counts.Reject(loader.Reason(re))
				if err := rej.Write(re); err != nil {
					return err
				}
				if cfg.Strict {
					return fmt.Errorf("%w: %v", ErrStrict, re)
				}
				return nil
			}
			w := &it.out
			at := loc{off: sp.size, n: uint32(len(w.rec))}
			if w.big != nil {
				_, n, err := sp.AppendExample(w.big)
				if err != nil {
					return err
				}
				at.n, w.big = n, nil
			} else if _, err := sp.AppendRecord(w.rec); err != nil {
				return err
			}
			m.Counts.Written++
			w.key.Behavior = intern(w.key.Behavior)
			if err := keep(w.key, at); err != nil {
				return err
			}
			p.lens.add(w.plen, w.clen)
			if w.repaired > 0 {
				p.notes["repaired_tool_call_ids"] += int64(w.repaired)
				p.notes["rows_with_repaired_ids"]++
			}
			if w.textTools {
				p.notes["assistant_text_with_tools"]++
			}
			if w.trimmed {
				p.notes["truncated"]++
			}
			if w.unpaired > 0 {
				p.notes[NoteUnpairedToolResults] += int64(w.unpaired)
				p.notes[NoteRowsWithUnpairedResults]++
			}
			if w.largeText {
				p.notes[NoteLargeText]++
			}
			return nil
		}
		err = ordered(cfg.Workers, cfg.Workers*64, r.ReadOwnedRecord, work, emit)
		sum, size := r.Digest()
		m.Inputs = append(m.Inputs, export.Input{Name: in.Name, SHA256: sum, Bytes: size})
		if cerr := r.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("%s: %w", in.Name, cerr)
		}
		if err != nil {
			return nil, err
		}
	}
	if p.skipped > 0 {
		p.notes[NoteSkippedOtherShard] = p.skipped
	}
	return p, nil
}
