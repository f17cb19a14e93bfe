package report

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"

	"github.com/ktoloader/ktoloader/kto"
	"github.com/ktoloader/ktoloader/loader"
	"github.com/ktoloader/ktoloader/testdata"
)

// The raw inputs: the manifest's input files, found again and re-read (eachRaw), to add what
// rendering loses (whether a prompt had a system message, the turns' own text, which
// near-duplicate detection compares) to the kto/ rows they became, matched by source.

// rawInput is how one manifest input is re-read.
type rawInput struct {
	open func(loader.Config) (*loader.Reader, error)
}

func (s *scanner) resolveInputs() []rawInput {
	out := make([]rawInput, len(s.m.Inputs))
	s.rep.Inputs = make([]InputStatus, len(s.m.Inputs))
	for i, in := range s.m.Inputs {
		st := &s.rep.Inputs[i]
		st.Name = in.Name
		path := in.Name
		if len(s.opt.Inputs) > 0 {
			path = s.opt.Inputs[i]
		}
		switch {
		case path == testdata.SampleName:
			st.Path, st.Found = path, true
			out[i].open = func(c loader.Config) (*loader.Reader, error) {
				return loader.NewReader(bytes.NewReader(testdata.SampleJSONL), testdata.SampleName, c)
			}
		case path == "-":
			st.Note = "read from stdin by prep: pass the file with --input to use it"
		default:
			fi, err := os.Stat(path)
			if err != nil || fi.IsDir() {
				st.Path = path
				st.Note = "not found from the current directory: pass it with --input"
				continue
			}
			st.Path, st.Found = path, true
			out[i].open = func(c loader.Config) (*loader.Reader, error) { return loader.Open(path, c) }
		}
	}
	return out
}

// eachRaw streams the found inputs, calling fn for every valid row that is a kto/ row. The
// first call records the inputs' status.
func (s *scanner) eachRaw(inputs []rawInput, record bool, fn func(ord int32, row *loader.Row)) {
	cfg := loader.Config{MissingLabel: new(bool)} // the shards have the labels; rows without one still match
	if v := s.m.Config.MaxLineBytes; v > 0 && v <= math.MaxInt32 {
		cfg.MaxLineBytes = v
	}
	for i, in := range inputs {
		if in.open == nil {
			continue
		}
		st := &s.rep.Inputs[i]
		r, err := in.open(cfg)
		if err != nil {
			if record {
				st.Found, st.Note = false, err.Error()
			}
			continue
		}
		for {
			row, err := r.Read()
			if errors.Is(err, io.EOF) {
				if record {
					sum, _ := r.Digest()
					st.SHA256OK = sum == s.m.Inputs[i].SHA256
					if !st.SHA256OK && st.Note == "" {
						st.Note = "its sha256 differs from the manifest's: the file changed since prep, raw features may not match the shards"
					}
				}
				break
			}
			var re *loader.RowError
			if errors.As(err, &re) {
				continue
			}
			if err != nil {
				if record {
					st.Note = fmt.Sprintf("read error after %d rows: %v", st.Rows, err)
				}
				break
			}
			if record {
				st.Rows++
			}
			ord, ok := s.byRaw[rawKey(i, row.Line)]
			if !ok {
				continue
			}
			if record {
				st.Matched++
			}
			fn(ord, &row)
		}
		r.Close()
	}
}

// scanRaw reads the inputs for the features rendering loses, and runs the near-duplicate
// search: test rows indexed first, then train rows looked up.
func (s *scanner) scanRaw() error {
	inputs := s.resolveInputs()
	all := len(inputs) > 0
	for _, st := range s.rep.Inputs {
		all = all && st.Found
	}
	nd := &s.rep.Dups.NearDup
	nd.Threshold = NearDupThreshold
	indexTest := func(ord int32, text string) {
		if s.ex[ord].test {
			s.lsh.add(ord, normalize(text))
		}
	}
	s.eachRaw(inputs, true, func(ord int32, row *loader.Row) {
		e := &s.ex[ord]
		sys := len(row.Messages) > 0 && row.Messages[0].Role == "system"
		s.rep.Answers.Matched.Add(e.label)
		if sys {
			s.rep.Answers.SystemPrompt.Add(e.label)
		}
		s.fSystem.addBool(sys, e.label, e.behavior)
		s.fTurns.add(int64(max(len(row.Messages)-1, 0)), e.label, e.behavior)
		if all {
			indexTest(ord, turnsText(row))
		}
	})
	all = all && !slices.ContainsFunc(s.rep.Inputs, func(st InputStatus) bool { return !st.Found })
	matched := int64(0)
	for _, st := range s.rep.Inputs {
		matched += st.Matched
	}
	if all && matched == int64(len(s.ex)) {
		nd.Compared = "the prompt's turns from the raw inputs, system messages left out (their shared boilerplate would make unrelated prompts look alike), normalized"
		s.best = newMatches(len(s.lsh.sigs))
		s.eachRaw(inputs, false, func(ord int32, row *loader.Row) {
			if !s.ex[ord].test {
				s.query(ord, normalize(turnsText(row)))
			}
		})
		return nil
	}
	// Without every input, compare the rendered prompts from the shards.
	s.lsh = newLSHIndex()
	nd.Compared = "the rendered prompts from kto/ (system messages included), normalized"
	nd.Note = "not every kto/ row was found in the raw inputs, so the rendered prompts were compared; a long shared system prompt can make unrelated prompts look alike"
	if err := s.eachKTO([]string{"test"}, func(ord int32, row *kto.KTORow) { s.lsh.add(ord, normalize(row.Prompt)) }); err != nil {
		return err
	}
	s.best = newMatches(len(s.lsh.sigs))
	return s.eachKTO([]string{"train"}, func(ord int32, row *kto.KTORow) { s.query(ord, normalize(row.Prompt)) })
}

func (s *scanner) query(ord int32, text string) {
	s.lsh.query(text, func(i int32, sim float64, identical bool) {
		b := &s.best[i]
		if b.ord < 0 || sim > b.sim || sim == b.sim && ord < b.ord {
			b.ord, b.sim = ord, sim
		}
		b.identical = b.identical || identical
	})
}

func newMatches(n int) []match {
	m := make([]match, n)
	for i := range m {
		m[i].ord = -1
	}
	return m
}

// turnsText is a raw row's prompt turns without system messages: roles, texts and tool
// calls.
func turnsText(row *loader.Row) string {
	var b strings.Builder
	msgs := row.Messages
	if n := len(msgs); n > 0 && msgs[n-1].Role == "assistant" {
		msgs = msgs[:n-1]
	}
	for _, m := range msgs {
		if m.Role == "system" {
			continue
		}
		b.WriteString(m.Role)
		b.WriteString(": ")
		b.WriteString(m.Text())
		for _, tc := range m.ToolCalls {
			b.WriteByte(' ')
			b.WriteString(tc.Name)
			b.Write(tc.Arguments)
		}
		b.WriteByte('\n')
	}
	return b.String()
}
