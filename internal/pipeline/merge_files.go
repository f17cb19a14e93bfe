package pipeline

// The files merge passes through rather than re-plans: sft/ shards (hard-linked or copied
// under new numbers) and the runs' rejects (concatenated).

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/internal/outdir"
)

var shardFileName = regexp.MustCompile(`-(\d{5})-of-\d{5}\.(parquet|arrow)$`)

// linkSFT hard-links (or copies) the runs' sft/ files of split into cfg.Out, numbered across
// the runs, and sums their packing statistics.
func linkSFT(cfg MergeConfig, runs []shardRun, split string, maxLen int) ([]export.FileInfo, export.PackInfo, error) {
	type src struct {
		dir string
		f   export.FileInfo
		idx int // global shard index
	}
	var srcs []src
	var info export.PackInfo
	base := 0
	for _, r := range runs {
		n := 0
		for _, f := range filesOf(r.m, export.KindSFT, split, false) {
			mm := shardFileName.FindStringSubmatch(f.Path)
			if mm == nil {
				return nil, info, fmt.Errorf("%s: %s is not a shard name", r.dir, f.Path)
			}
			k, _ := strconv.Atoi(mm[1])
			srcs = append(srcs, src{r.dir, f, base + k})
			n = max(n, k+1)
		}
		base += n
		pi := r.m.Packing.SFT[split]
		info.Rows += pi.Rows
		info.Sequences += pi.Sequences
		info.Tokens += pi.Tokens
	}
	if info.Rows > 0 && maxLen > 0 {
		info.Fill = float64(info.Tokens) / (float64(info.Rows) * float64(maxLen))
	}
	if err := os.MkdirAll(filepath.Join(cfg.Out, export.KindSFT), 0o755); err != nil {
		return nil, info, err
	}
	var files []export.FileInfo
	for _, s := range srcs {
		name := fmt.Sprintf("%s-%05d-of-%05d.%s", split, s.idx, base, s.f.Format)
		rel := path.Join(export.KindSFT, name)
		dst := filepath.Join(cfg.Out, filepath.FromSlash(rel))
		if err := cfg.Dir.Record(dst); err != nil {
			return files, info, err
		}
		if err := linkOrCopy(filepath.Join(s.dir, filepath.FromSlash(s.f.Path)), dst, cfg.Copy); err != nil {
			return files, info, err
		}
		f := s.f
		f.Path = rel
		files = append(files, f)
	}
	return files, info, nil
}

// linkOrCopy makes dst hold src's bytes: a hard link unless copy is set or linking fails
// (another file system), else a copy written under a temporary name and renamed.
func linkOrCopy(src, dst string, copy bool) error {
	if !copy {
		if err := os.Link(src, dst); err == nil {
			return nil
		}
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := export.CreateAtomic(dst)
	if err != nil {
		return err
	}
	defer out.Abort()
	if _, err := io.Copy(out, in); err != nil {
		return err
	}
	return out.Commit()
}

// concatRejects writes the runs' rejects files, in shard order, to dst, and returns its
// manifest entry.
func concatRejects(runs []shardRun, dst string, d *outdir.Dir) (*export.RejectsInfo, error) {
	out, err := export.CreateAtomic(dst)
	if err != nil {
		return nil, err
	}
	defer out.Abort()
	h := sha256.New()
	var cw countWriter
	w := bufio.NewWriterSize(io.MultiWriter(out, h, &cw), 1<<20)
	var rows int64
	for _, r := range runs {
		p := export.ResolveRejects(r.dir, r.m)
		in, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) && r.m.Counts.Rejected == 0 {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: its rejects file %s: %w", r.dir, p, err)
		}
		_, err = io.Copy(w, in)
		in.Close()
		if err != nil {
			return nil, err
		}
		rows += r.m.Counts.Rejected
	}
	if err := w.Flush(); err != nil {
		return nil, err
	}
	if err := d.Record(dst); err != nil {
		return nil, err
	}
	if err := out.Commit(); err != nil {
		return nil, err
	}
	return &export.RejectsInfo{Path: export.RejectsName, Rows: rows, Bytes: cw.n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}
