package export

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ktoloader/ktoloader/kto"
)

// FormatVersion is the manifest's format_version. Bump it when a field changes meaning.
const FormatVersion = 1

// ToolName is the manifest's tool.
const ToolName = "ktoloader"

// Manifest is OUT/manifest.json: everything a trainer or a later reader needs to know about
// a finished run, and nothing that varies between identical runs (no timestamps, host
// names, worker counts or absolute paths). Field order here is the order in the file; maps
// are written with sorted keys.
type Manifest struct {
	FormatVersion int    `json:"format_version"`
	Tool          string `json:"tool"`
	// Config holds the prep flags that shape the output (RunConfig).
	Config    RunConfig     `json:"config"`
	Inputs    []Input       `json:"inputs"`
	Tokenizer TokenizerInfo `json:"tokenizer"`
	Counts    Counts        `json:"counts"`
	Tokens    TokenStats    `json:"tokens"`
	Packing   PackingInfo   `json:"packing"`
	KTO       KTOInfo       `json:"kto"`
	// Split is how the group-aware train/test split came out, per behavior×label stratum
	// (kto.SplitStats); nil in manifests written before it existed.
	Split any        `json:"split,omitempty"`
	Files []FileInfo `json:"files"`
	// Rejects checksums the rejects file (nil in manifests written before it existed). Path
	// is RejectsName when it lies in the output directory, else as given to --rejects.
	Rejects *RejectsInfo `json:"rejects,omitempty"`
	// Warnings are ComputeWarnings' findings on the counts above (a single label, most rows
	// rejected, none written, batches missing a label); absent when there are none.
	Warnings []Warning `json:"warnings,omitempty"`
}

// RejectsInfo is the rejects file's size, record count and sha256, as written.
type RejectsInfo struct {
	Path   string `json:"path"`
	Rows   int64  `json:"rows"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// Input is one input file, named as given on the command line ("-" for stdin, "(embedded
// sample)" for the built-in one).
type Input struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	Bytes  int64  `json:"bytes"`
}

// TokenizerInfo says which tokenizer made the ids. Name is as given (a path as typed, a
// repository id); Demo marks the small fallback tokenizer, whose shards are not Mistral's.
type TokenizerInfo struct {
	Name      string `json:"name"`
	Kind      string `json:"kind"` // sentencepiece, tokenizer.json, …
	SHA256    string `json:"sha256"`
	Demo      bool   `json:"demo"`
	VocabSize int    `json:"vocab_size"`
}

// Counts account for every input row: Read = Written + Rejected, and Reasons sum to
// Rejected.
type Counts struct {
	Read     int64            `json:"read"`
	Written  int64            `json:"written"`
	Rejected int64            `json:"rejected"`
	Reasons  map[string]int64 `json:"reasons"`
	// Splits holds, per split, the examples in its kto/ shards (desirable ones are also its
	// sft/ sequences). Examples that --drop-last leaves out of the last KTO batch are
	// written rows but in no split: they are counted in KTO.Splits[…].Dropped, so that
	// the sum of Splits' examples plus the dropped ones is Written.
	Splits map[string]SplitCounts `json:"splits"`
	// Notes counts written rows that were changed on the way (repaired_tool_call_ids,
	// assistant_text_with_tools, truncated, …).
	Notes map[string]int64 `json:"notes,omitempty"`
}

// Reject counts one rejected row under its reason (loader.Reason's names).
func (c *Counts) Reject(reason string) {
	c.Rejected++
	c.Reasons[reason]++
}

// Unwrite turns a row counted as written into a rejected one: a row can be rejected after it
// was written to the spill (--drop-last leaves it out of the last batch, which is planned
// only once every row is read). Read = Written + Rejected still holds.
func (c *Counts) Unwrite(reason string) {
	c.Written--
	c.Reject(reason)
}

// SplitCounts are one split's examples by label and by behavior.
type SplitCounts struct {
	Examples    int64                  `json:"examples"`
	Desirable   int64                  `json:"desirable"`
	Undesirable int64                  `json:"undesirable"`
	Behaviors   map[string]LabelCounts `json:"behaviors"`
}

// LabelCounts split a count by label.
type LabelCounts struct {
	Desirable   int64 `json:"desirable"`
	Undesirable int64 `json:"undesirable"`
}

// Add counts one example with the label desirable (true) or undesirable.
func (c *LabelCounts) Add(desirable bool) {
	if desirable {
		c.Desirable++
	} else {
		c.Undesirable++
	}
}

// Add counts one example of a split: in the totals and under its behavior (Behaviors must
// be made). prep counts the rows it writes with it, merge and verify the rows they read.
func (c *SplitCounts) Add(behavior string, desirable bool) {
	c.Examples++
	if desirable {
		c.Desirable++
	} else {
		c.Undesirable++
	}
	lc := c.Behaviors[behavior]
	lc.Add(desirable)
	c.Behaviors[behavior] = lc
}

// TokenStats describe example lengths in tokens.
type TokenStats struct {
	Prompt     Dist `json:"prompt"`
	Completion Dist `json:"completion"`
	Total      Dist `json:"total"`
}

// Dist summarizes a distribution of lengths. Percentiles are nearest-rank.
type Dist struct {
	Count int64   `json:"count"`
	Min   int64   `json:"min"`
	Mean  float64 `json:"mean"`
	P50   int64   `json:"p50"`
	P95   int64   `json:"p95"`
	Max   int64   `json:"max"`
}

// Summarize returns the Dist of xs (which it sorts in place). The mean is rounded to
// 1/1000 so that it prints the same everywhere.
func Summarize(xs []int) Dist {
	if len(xs) == 0 {
		return Dist{}
	}
	slices.Sort(xs)
	var sum float64
	for _, x := range xs {
		sum += float64(x)
	}
	rank := func(p float64) int64 { // nearest rank: the smallest x with ≥ p of the data at or below it
		i := int(math.Ceil(p*float64(len(xs)))) - 1
		return int64(xs[max(i, 0)])
	}
	return Dist{
		Count: int64(len(xs)),
		Min:   int64(xs[0]),
		Mean:  math.Round(sum/float64(len(xs))*1000) / 1000,
		P50:   rank(0.50),
		P95:   rank(0.95),
		Max:   int64(xs[len(xs)-1]),
	}
}

// PackingInfo describes kto_packed/ and sft/ per split.
type PackingInfo struct {
	MaxLen    int                 `json:"max_len"`
	KTOPacked map[string]PackInfo `json:"kto_packed"`
	SFT       map[string]PackInfo `json:"sft"`
}

// PackInfo describes one split of a packed kind: Fill is Tokens / (Rows × MaxLen). It is
// the packer's own count (kto.PackStats without the row length, which packing.max_len holds).
type PackInfo = kto.PackCounts

// KTOInfo describes the KTO batches: the batch size and TRL loss weights suggested for the
// train split's label balance, and per split how batching came out.
type KTOInfo struct {
	BatchSize         int                  `json:"batch_size"`
	DesirableWeight   float64              `json:"desirable_weight"`
	UndesirableWeight float64              `json:"undesirable_weight"`
	Splits            map[string]BatchInfo `json:"splits"`
}

// BatchInfo is one split's KTO batching, as kto.BatchStats counts it (without the batch size
// and weights, which kto.batch_size and kto.*_weight hold for the whole run). Examples is the
// split's rows in kto/: Counts.Splits[…].Examples.
type BatchInfo = kto.BatchCounts

// NewManifest returns a manifest with the constant fields set and the maps made, so that
// empty maps print as {} rather than null.
func NewManifest() *Manifest {
	return &Manifest{
		FormatVersion: FormatVersion,
		Tool:          ToolName,
		Inputs:        []Input{},
		Counts:        Counts{Reasons: map[string]int64{}, Splits: map[string]SplitCounts{}},
		Packing:       PackingInfo{KTOPacked: map[string]PackInfo{}, SFT: map[string]PackInfo{}},
		KTO:           KTOInfo{Splits: map[string]BatchInfo{}},
		Files:         []FileInfo{},
	}
}

// Marshal returns the manifest as written: 2-space indent, sorted map keys, files sorted by
// path, a trailing newline. It refuses absolute or backslashed file paths, which would make
// the directory unmovable and the bytes host-dependent.
func (m *Manifest) Marshal() ([]byte, error) {
	c := *m
	c.Files = slices.Clone(m.Files)
	slices.SortFunc(c.Files, func(a, b FileInfo) int { return strings.Compare(a.Path, b.Path) })
	for _, f := range c.Files {
		if !localPath(f.Path) {
			return nil, fmt.Errorf("%w: file path %q is not relative with forward slashes", ErrBadManifest, f.Path)
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&c); err != nil { // Encode ends with the newline
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteManifest writes dir/manifest.json atomically. Write it last: its presence is what
// makes dir a finished run.
func WriteManifest(dir string, m *Manifest) error {
	data, err := m.Marshal()
	if err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(dir, ManifestName), data)
}

// ReadManifest reads dir/manifest.json: ErrNoManifest when absent, ErrBadManifest when it
// is not a manifest.
func ReadManifest(dir string) (*Manifest, error) {
	m, _, err := ReadManifestSHA256(dir)
	return m, err
}

// ReadManifestSHA256 is ReadManifest that also returns the hex sha256 of the file's bytes:
// it identifies the run's data (a trainer keys its caches on it).
func ReadManifestSHA256(dir string) (*Manifest, string, error) {
	p := filepath.Join(dir, ManifestName)
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", fmt.Errorf("%s: %w", dir, ErrNoManifest)
	}
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(data)
	m, err := parseManifest(p, data)
	return m, hex.EncodeToString(sum[:]), err
}

func parseManifest(p string, data []byte) (*Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // split statistics (any) keep their digits
	if err := dec.Decode(&m); err != nil {
		return nil, &FileError{Path: p, Err: fmt.Errorf("%w: %v", ErrBadManifest, err)}
	}
	if m.Tool != ToolName || m.FormatVersion < 1 {
		return nil, &FileError{Path: p, Err: fmt.Errorf("%w: tool %q, format_version %d", ErrBadManifest, m.Tool, m.FormatVersion)}
	}
	if m.FormatVersion > FormatVersion {
		return nil, &FileError{Path: p, Err: fmt.Errorf("%w: format_version %d is newer than this ktoloader's %d", ErrBadManifest, m.FormatVersion, FormatVersion)}
	}
	return &m, nil
}

// localPath reports whether p is a relative, slash-separated path that stays inside the
// directory.
func localPath(p string) bool {
	return p != "" && !strings.Contains(p, `\`) && filepath.IsLocal(filepath.FromSlash(p)) && !strings.HasPrefix(p, "/")
}

// ResolveRejects is where the rejects file of the run in dir lies: dir/rejects.jsonl by
// default, else the manifest's path, which is relative to dir (an absolute path is kept).
func ResolveRejects(dir string, m *Manifest) string {
	if m == nil || m.Rejects == nil || m.Rejects.Path == "" || m.Rejects.Path == RejectsName {
		return filepath.Join(dir, RejectsName)
	}
	if filepath.IsAbs(m.Rejects.Path) {
		return m.Rejects.Path
	}
	return filepath.Join(dir, filepath.FromSlash(m.Rejects.Path))
}
