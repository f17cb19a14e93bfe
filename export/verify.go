package export

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"math"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/ktoloader/ktoloader/kto"
)

// DesignColumns are the columns of each shard kind exactly as DESIGN.md specifies them
// (plus kto_packed's segment_example, which maps a segment to its example in the batch).
// Verify compares files against this table, written out here rather than derived from the
// row structs, so that a changed struct tag cannot silently change the contract.
var DesignColumns = map[string][]ColumnType{
	KindKTO: {
		{"prompt_ids", "list<int32>"},
		{"completion_ids", "list<int32>"},
		{"KL_completion_ids", "list<int32>"},
		{"label", "bool"},
		{"behavior", "string"},
		{"prompt", "string"},
		{"completion", "string"},
		{"source", "string"},
		{"batch_index", "int64"},
	},
	KindKTOPacked: {
		{"input_ids", "list<int32>"},
		{"segment_ids", "list<int32>"},
		{"position_ids", "list<int32>"},
		{"loss_mask", "list<int32>"},
		{"segment_label", "list<int32>"},
		{"segment_kl", "list<bool>"},
		{"segment_source", "list<string>"},
		{"segment_example", "list<int32>"},
		{"batch_index", "int64"},
	},
	KindSFT: {
		{"input_ids", "list<int32>"},
		{"labels", "list<int32>"},
		{"position_ids", "list<int32>"},
		{"seq_lengths", "list<int32>"},
	},
}

// IgnoreIndex is the label of a token SFT takes no loss on (Hugging Face's -100): the one
// sft/ is written with.
const IgnoreIndex = kto.IgnoreIndex

// Checks named in violations.
const (
	CheckManifest = "manifest"      // manifest fields inconsistent or unusable
	CheckCounts   = "counts"        // counts disagree with each other or with the files
	CheckRejects  = "rejects"       // rejects.jsonl disagrees with the counts
	CheckUnlisted = "unlisted"      // a file in a shard directory the manifest does not list
	CheckName     = "name"          // a listed path that is not kind/split-XXXXX-of-YYYYY.ext
	CheckFile     = "file"          // a listed file missing or unreadable
	CheckBytes    = "bytes"         // size differs from the manifest
	CheckSHA256   = "sha256"        // digest differs from the manifest
	CheckSchema   = "schema"        // columns differ from DesignColumns
	CheckRows     = "rows"          // row count differs from the manifest or footer
	CheckTwin     = "twin"          // an .arrow file's rows differ from its .parquet twin
	CheckLength   = "length"        // a row or sequence longer than max_len, or lists of unequal length
	CheckBatch    = "batch"         // kto batch structure (batch_index runs, batch size)
	CheckKL       = "kl"            // kto KL_completion_ids not TRL's pairing
	CheckSegments = "segments"      // kto_packed segment ids, positions, per-segment lists
	CheckLossMask = "loss_mask"     // kto_packed loss_mask
	CheckPacked   = "packed_vs_kto" // kto_packed sequences differ from kto/ rows
	CheckSFT      = "sft"           // sft seq_lengths, positions, labels
	CheckSFTMatch = "sft_vs_kto"    // sft sequences differ from kto/'s desirable rows
	CheckPackInfo = "packing"       // manifest packing stats differ from the files
)

// Violation is one thing wrong with an output directory.
type Violation struct {
	File  string `json:"file,omitempty"` // relative to the directory; empty for the manifest
	Row   int64  `json:"row"`            // 0-based row in File; -1 for the whole file
	Check string `json:"check"`
	What  string `json:"what"`
}

func (v Violation) String() string {
	where := v.File
	if where == "" {
		where = ManifestName
	}
	if v.Row >= 0 {
		where += fmt.Sprintf(" row %d", v.Row)
	}
	return fmt.Sprintf("%s: [%s] %s", where, v.Check, v.What)
}

// Report is what Verify found.
type Report struct {
	Files      int         `json:"files"` // files read
	Rows       int64       `json:"rows"`  // rows read
	Violations []Violation `json:"violations"`
	// Omitted counts violations not listed: at most maxPerCheck per file and check, and
	// maxViolations in all, are kept.
	Omitted int `json:"omitted"`
	// Counts has, per file and check, how many violations were found, listed or not, in the
	// order first found: one damaged shard can break an invariant on every row, and a reader
	// wants "8,000 rows of this check in this file", not 8,000 lines.
	Counts []CheckCount `json:"counts"`
}

// CheckCount is how many violations of one check one file has.
type CheckCount struct {
	File  string `json:"file,omitempty"` // empty for the manifest
	Check string `json:"check"`
	N     int    `json:"n"`
}

// OK reports whether nothing was found wrong.
func (r *Report) OK() bool { return len(r.Violations) == 0 && r.Omitted == 0 }

const (
	maxViolations = 1000
	maxPerCheck   = 20
)

// Verify re-reads the finished output directory dir and checks it against its manifest and
// the contracts of DESIGN.md: every listed file present with its size, sha256, row count and
// schema; no unlisted shard or temporary file; the manifest's counts consistent; and the
// invariants of each kind:
//   - kto/: rows and KL sequences within max_len; batch_index runs of exactly kto.batch_size
//     rows (the last may be shorter), numbered consecutively; KL_completion_ids of a row is
//     the completion of the previous row of its batch (the first takes the last), possibly
//     cut at the end to fit max_len.
//   - kto_packed/: rows exactly max_len long; segments 1..k contiguous and in order, then
//     only padding; positions restarting at 0 per segment; loss_mask 0/1, 0 on padding and
//     on each segment's prompt, 1 on its completion; per-segment lists k long; and every
//     example of kto/ present once as its target (and once as its KL pair when there are
//     any), token for token.
//   - sft/: rows within max_len; seq_lengths summing to at most the row length with only
//     ignored padding after; positions restarting at 0 per sequence; labels -100 or equal to
//     input_ids, and with sft_loss "completion" -100 exactly on each sequence's prompt; every
//     sequence a desirable example of kto/ and every desirable kto/ example present.
//
// Violations go into the report; the error is for a directory that cannot be checked at all
// (no manifest, unreadable manifest).
func Verify(dir string) (Report, error) {
	m, err := ReadManifest(dir)
	if err != nil {
		return Report{}, err
	}
	v := newVerifier(dir, m)
	v.run()
	return *v.rep, nil
}

type verifier struct {
	dir       string
	m         *Manifest
	rep       *Report
	perCheck  map[[2]string]int
	countAt   map[[2]string]int // index in rep.Counts
	maxLen    int
	batchSize int
	sftLoss   string
	seed      maphash.Seed
	splits    map[string]*splitState
	buf       []byte // scratch for hashing ids
}

func newVerifier(dir string, m *Manifest) *verifier {
	v := &verifier{
		dir: dir, m: m, rep: &Report{Violations: []Violation{}, Counts: []CheckCount{}},
		perCheck: map[[2]string]int{}, countAt: map[[2]string]int{}, seed: maphash.MakeSeed(), splits: map[string]*splitState{},
	}
	if n := m.Config.MaxLen; n > 0 {
		v.maxLen = n
	} else if m.Packing.MaxLen > 0 {
		v.maxLen = m.Packing.MaxLen
	}
	if m.KTO.BatchSize > 0 {
		v.batchSize = m.KTO.BatchSize
	} else if n := m.Config.KTOBatchSize; n > 0 {
		v.batchSize = n
	}
	v.sftLoss = m.Config.SFTLoss
	if v.sftLoss == "" {
		v.sftLoss = kto.SFTLossCompletion
	}
	return v
}

func (v *verifier) add(file string, row int64, check, format string, args ...any) {
	k := [2]string{file, check}
	if i, ok := v.countAt[k]; ok {
		v.rep.Counts[i].N++
	} else {
		v.countAt[k] = len(v.rep.Counts)
		v.rep.Counts = append(v.rep.Counts, CheckCount{File: file, Check: check, N: 1})
	}
	v.perCheck[k]++
	if v.perCheck[k] > maxPerCheck || len(v.rep.Violations) >= maxViolations {
		v.rep.Omitted++
		return
	}
	v.rep.Violations = append(v.rep.Violations, Violation{File: file, Row: row, Check: check, What: fmt.Sprintf(format, args...)})
}

// listedName parses kind/split-XXXXX-of-YYYYY.ext.
var listedName = regexp.MustCompile(`^([^/]+)/(\w+(?:\.\w+)*)-(\d{5})-of-(\d{5})\.(parquet|arrow)$`)

type group struct {
	kind, split string
	format      Format
	files       []FileInfo
}

func (v *verifier) run() {
	if v.maxLen == 0 {
		v.add("", -1, CheckManifest, "config has no max_len (and packing.max_len is 0): lengths cannot be checked")
	}
	if v.batchSize == 0 {
		v.add("", -1, CheckManifest, "kto.batch_size is 0 and config has no kto_batch_size: batches cannot be checked")
	}
	groups := v.checkListing()
	v.checkUnlisted()
	digests := map[string][32]byte{} // parquet path → content digest, for arrow twins
	for _, g := range groups {
		primary := g.format == FormatParquet || !slices.ContainsFunc(groups, func(o *group) bool {
			return o.kind == g.kind && o.split == g.split && o.format == FormatParquet
		})
		for _, fi := range g.files {
			v.checkFile(fi, primary, digests)
		}
		if primary {
			v.finishGroup(g)
		}
	}
	v.checkCounts()
	v.checkRejects()
}

// checkListing validates the manifest's file list and orders it for reading: kto before
// kto_packed and sft (which are checked against it), Parquet before Arrow, shards in order.
func (v *verifier) checkListing() []*group {
	seen := map[string]bool{}
	byKey := map[string]*group{}
	shards := map[string]map[int]int{} // group key → shard index → declared total
	for _, fi := range v.m.Files {
		if !localPath(fi.Path) {
			v.add(fi.Path, -1, CheckName, "path is not relative with forward slashes inside the directory")
			continue
		}
		if seen[fi.Path] {
			v.add(fi.Path, -1, CheckName, "listed twice")
			continue
		}
		seen[fi.Path] = true
		m := listedName.FindStringSubmatch(fi.Path)
		if m == nil {
			v.add(fi.Path, -1, CheckName, "not kind/split-XXXXX-of-YYYYY.parquet|arrow")
			continue
		}
		if m[1] != fi.Kind || m[2] != fi.Split || m[5] != string(fi.Format) {
			v.add(fi.Path, -1, CheckName, "path says %s/%s/%s, entry says kind %q split %q format %q", m[1], m[2], m[5], fi.Kind, fi.Split, fi.Format)
		}
		if _, ok := DesignColumns[m[1]]; !ok {
			v.add(fi.Path, -1, CheckName, "unknown kind %q", m[1])
		}
		key := m[1] + "\x00" + m[2] + "\x00" + m[5]
		g := byKey[key]
		if g == nil {
			g = &group{kind: m[1], split: m[2], format: Format(m[5])}
			byKey[key] = g
			shards[key] = map[int]int{}
		}
		g.files = append(g.files, FileInfo{Path: fi.Path, Format: Format(m[5]), Kind: m[1], Split: m[2], Rows: fi.Rows, Bytes: fi.Bytes, SHA256: fi.SHA256})
		i, _ := strconv.Atoi(m[3])
		n, _ := strconv.Atoi(m[4])
		shards[key][i] = n
	}
	var groups []*group
	for key, g := range byKey {
		sort.Slice(g.files, func(i, j int) bool { return g.files[i].Path < g.files[j].Path })
		n := len(g.files)
		for i := 0; i < n; i++ {
			total, ok := shards[key][i]
			if !ok {
				v.add(g.files[0].Path, -1, CheckName, "%s/%s: shard %05d of %d not listed", g.kind, g.split, i, n)
			} else if total != n {
				v.add(g.files[i].Path, -1, CheckName, "name says %d shards, the manifest lists %d", total, n)
			}
		}
		groups = append(groups, g)
	}
	kindOrder := func(k string) int {
		if i := slices.Index(shardKinds, k); i >= 0 {
			return i
		}
		return len(shardKinds)
	}
	sort.Slice(groups, func(i, j int) bool {
		a, b := groups[i], groups[j]
		if ka, kb := kindOrder(a.kind), kindOrder(b.kind); ka != kb {
			return ka < kb
		}
		if a.kind != b.kind {
			return a.kind < b.kind
		}
		if a.split != b.split {
			return a.split < b.split
		}
		return a.format == FormatParquet && b.format != FormatParquet
	})
	return groups
}

// checkUnlisted flags temporary files and shard-directory files the manifest does not list.
func (v *verifier) checkUnlisted() {
	listed := map[string]bool{}
	for _, fi := range v.m.Files {
		listed[fi.Path] = true
	}
	if entries, err := os.ReadDir(v.dir); err == nil {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), tmpPrefix) {
				v.add(e.Name(), -1, CheckUnlisted, "temporary file left by an interrupted write")
			}
		}
	}
	for _, kind := range shardKinds {
		entries, err := os.ReadDir(filepath.Join(v.dir, kind))
		if err != nil {
			continue
		}
		for _, e := range entries {
			p := path.Join(kind, e.Name())
			switch {
			case listed[p]:
			case strings.HasPrefix(e.Name(), tmpPrefix):
				v.add(p, -1, CheckUnlisted, "temporary file left by an interrupted write")
			default:
				v.add(p, -1, CheckUnlisted, "not listed in the manifest")
			}
		}
	}
}

// checkFile checks one listed file: size and digest, then schema and rows.
func (v *verifier) checkFile(fi FileInfo, primary bool, digests map[string][32]byte) {
	full := filepath.Join(v.dir, filepath.FromSlash(fi.Path))
	v.rep.Files++
	size, sum, err := FileSHA256(full)
	if err != nil {
		v.add(fi.Path, -1, CheckFile, "%v", err)
		return
	}
	if size != fi.Bytes {
		v.add(fi.Path, -1, CheckBytes, "%d bytes, manifest says %d", size, fi.Bytes)
	}
	if sum != fi.SHA256 {
		v.add(fi.Path, -1, CheckSHA256, "sha256 %s, manifest says %s", sum, fi.SHA256)
	}
	want, ok := DesignColumns[fi.Kind]
	if !ok {
		return
	}
	cols, err := fileColumns(full, fi.Format)
	if err != nil {
		v.add(fi.Path, -1, CheckFile, "%v", err)
		return
	}
	if d := diffColumns(cols, want); d != "" {
		v.add(fi.Path, -1, CheckSchema, "%s", d)
		return
	}
	var rows int64
	var digest [32]byte
	switch fi.Kind {
	case KindKTO:
		st := v.split(fi.Split)
		rows, digest, err = scan(full, primary, func(i int64, r *kto.KTORow) { v.ktoRow(st, fi.Path, i, r) })
	case KindKTOPacked:
		st := v.split(fi.Split)
		rows, digest, err = scan(full, primary, func(i int64, r *kto.PackedRow) { v.packedRow(st, fi.Path, i, r) })
	case KindSFT:
		st := v.split(fi.Split)
		rows, digest, err = scan(full, primary, func(i int64, r *kto.SFTRow) { v.sftRow(st, fi.Path, i, r) })
	}
	v.rep.Rows += rows
	if err != nil {
		v.add(fi.Path, rows, CheckFile, "%v", err)
		return
	}
	if rows != fi.Rows {
		v.add(fi.Path, -1, CheckRows, "%d rows, manifest says %d", rows, fi.Rows)
	}
	if fi.Format == FormatParquet {
		digests[fi.Path] = digest
	} else if twin, ok := digests[strings.TrimSuffix(fi.Path, ".arrow")+".parquet"]; ok && twin != digest {
		v.add(fi.Path, -1, CheckTwin, "rows differ from the .parquet shard of the same name")
	}
}

// fileColumns reads a shard's schema without reading rows, never panicking.
func fileColumns(p string, format Format) (cols []ColumnType, err error) {
	defer func() {
		if r := recover(); r != nil {
			cols, err = nil, corruptf(p, "%v", r)
		}
	}()
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if format == FormatArrow {
		r, err := newArrowFileReader(f, st.Size())
		if err != nil {
			return nil, corruptf(p, "arrow: %v", err)
		}
		defer r.Close()
		return ArrowColumns(r.Schema()), nil
	}
	pf, err := openParquetChecked(f, st.Size())
	if err != nil {
		return nil, corruptf(p, "parquet: %v", err)
	}
	return ParquetColumns(pf.Schema()), nil
}

// scan reads every row of a shard, calling check for each when primary, and returns the
// row count and a digest of the rows' content (to compare an Arrow twin with its Parquet
// shard).
func scan[T any](p string, primary bool, check func(int64, *T)) (int64, [32]byte, error) {
	var n int64
	h := sha256.New()
	var buf []byte
	err := ReadBatches(p, 256, func(rows []T) error {
		for i := range rows {
			if primary {
				check(n, &rows[i])
			}
			buf = appendRowDigest(buf[:0], reflect.ValueOf(&rows[i]).Elem())
			h.Write(buf)
			n++
		}
		return nil
	})
	var d [32]byte
	h.Sum(d[:0])
	return n, d, err
}

// appendRowDigest appends an unambiguous encoding of a row struct's fields.
func appendRowDigest(b []byte, v reflect.Value) []byte {
	for i := 0; i < v.NumField(); i++ {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.Slice:
			b = binary.LittleEndian.AppendUint64(b, uint64(f.Len()))
			for j := 0; j < f.Len(); j++ {
				b = appendScalarDigest(b, f.Index(j))
			}
		default:
			b = appendScalarDigest(b, f)
		}
	}
	return b
}

func appendScalarDigest(b []byte, f reflect.Value) []byte {
	switch f.Kind() {
	case reflect.Int32, reflect.Int64:
		return binary.LittleEndian.AppendUint64(b, uint64(f.Int()))
	case reflect.Bool:
		if f.Bool() {
			return append(b, 1)
		}
		return append(b, 0)
	case reflect.String:
		b = binary.LittleEndian.AppendUint64(b, uint64(f.Len()))
		return append(b, f.String()...)
	case reflect.Float32, reflect.Float64:
		return binary.LittleEndian.AppendUint64(b, math.Float64bits(f.Float()))
	}
	return b
}

// hashIDs hashes a token sequence (and an extra number, such as a prompt length) for the
// cross-checks between kinds. 64 bits: a collision among a few million sequences is
// vanishingly unlikely, and would only hide a violation, never invent one.
func (v *verifier) hashIDs(extra int64, parts ...[]int32) uint64 {
	b := binary.LittleEndian.AppendUint64(v.buf[:0], uint64(extra))
	for _, p := range parts {
		for _, id := range p {
			b = binary.LittleEndian.AppendUint32(b, uint32(id))
		}
	}
	v.buf = b
	return maphash.Bytes(v.seed, b)
}

// checkRejects compares rejects.jsonl with counts.rejected, and checks each record's shape.
// A rejects file outside the directory (prep --rejects elsewhere) is found through the
// manifest's path, relative to the directory, and named as the manifest names it.
func (v *verifier) checkRejects() {
	p := ResolveRejects(v.dir, v.m)
	name := RejectsName
	if ri := v.m.Rejects; ri != nil && ri.Path != "" {
		name = ri.Path
	}
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		if v.m.Counts.Rejected > 0 {
			v.add(name, -1, CheckRejects, "missing (%s), but counts.rejected is %d", p, v.m.Counts.Rejected)
		}
		return
	}
	if err != nil {
		v.add(name, -1, CheckRejects, "%v", err)
		return
	}
	defer f.Close()
	h := sha256.New()
	var size int64
	r := bufio.NewReaderSize(io.TeeReader(f, h), 1<<16)
	var n int64
	reasons := map[string]int64{}
	for {
		line, err := r.ReadBytes('\n')
		size += int64(len(line))
		if len(line) > 0 {
			var rec map[string]json.RawMessage
			if jerr := json.Unmarshal(line, &rec); jerr != nil {
				v.add(name, n, CheckRejects, "not a JSON object: %v", jerr)
			} else {
				for _, k := range []string{"file", "line", "field", "reason", "raw"} {
					if _, ok := rec[k]; !ok {
						v.add(name, n, CheckRejects, "record has no %q", k)
					}
				}
				var reason string
				if json.Unmarshal(rec["reason"], &reason) == nil {
					reasons[reason]++
				}
			}
			n++
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			v.add(name, -1, CheckRejects, "%v", err)
			return
		}
	}
	if n != v.m.Counts.Rejected {
		v.add(name, -1, CheckRejects, "%d records, counts.rejected is %d", n, v.m.Counts.Rejected)
	}
	if ri := v.m.Rejects; ri != nil {
		if sum := hex.EncodeToString(h.Sum(nil)); sum != ri.SHA256 || size != ri.Bytes {
			v.add(name, -1, CheckSHA256, "%d bytes with sha256 %s, the manifest lists %d bytes with %s", size, sum, ri.Bytes, ri.SHA256)
		}
	}
	// Each reason as often as counts.reasons says (this also covers manifests written
	// before rejects.jsonl had a digest in the manifest).
	names := make([]string, 0, len(reasons)+len(v.m.Counts.Reasons))
	for k := range reasons {
		names = append(names, k)
	}
	for k := range v.m.Counts.Reasons {
		if _, ok := reasons[k]; !ok {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	for _, k := range names {
		if reasons[k] != v.m.Counts.Reasons[k] {
			v.add(name, -1, CheckRejects, "%d records with reason %q, counts.reasons says %d", reasons[k], k, v.m.Counts.Reasons[k])
		}
	}
}
