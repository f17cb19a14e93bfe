package loader

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// parquetBatch is how many rows are decoded at a time: the memory bound for Parquet input.
const parquetBatch = 256

// openParquet reads a Hugging Face style Parquet file (conversations as list<struct>, tool
// arguments as strings) by converting each record batch to JSON lines and feeding them to the
// same validation as JSONL, so both formats obey one set of rules. Row numbers are 1-based.
func openParquet(path string, cfg Config) (rd *Reader, err error) {
	defer func() { // arrow's Parquet reader can panic on corrupt metadata
		if p := recover(); p != nil {
			rd, err = nil, fmt.Errorf("%s: not a readable Parquet file: %v", path, p)
		}
	}()
	ch := &countingHash{h: sha256.New()}
	if f, err := os.Open(path); err == nil {
		_, err = io.Copy(ch, f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	pf, err := file.OpenParquetFile(path, false)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{BatchSize: parquetBatch}, memory.DefaultAllocator)
	if err != nil {
		pf.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	rr, err := fr.GetRecordReader(context.Background(), nil, nil)
	if err != nil {
		pf.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	pr := &parquetRows{rr: rr}
	rd = &Reader{cfg: cfg, name: path, next: pr.next, hash: ch}
	rd.clos = append(rd.clos, closerFunc(func() error { rr.Release(); return pf.Close() }))
	return rd, nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

type parquetRows struct {
	rr   pqarrow.RecordReader
	buf  bytes.Buffer
	br   *bufio.Reader
	line int64
}

func (p *parquetRows) next() (data []byte, line int64, err error) {
	defer func() {
		if r := recover(); r != nil {
			data, err = nil, fmt.Errorf("corrupt Parquet data: %v", r)
		}
	}()
	for {
		if p.br != nil {
			b, err := p.br.ReadBytes('\n')
			if len(b) > 0 {
				p.line++
				return bytes.TrimSuffix(b, []byte("\n")), p.line, nil
			}
			if err != io.EOF {
				return nil, p.line + 1, err
			}
			p.br = nil
		}
		if !p.rr.Next() {
			if err := p.rr.Err(); err != nil && err != io.EOF {
				return nil, p.line + 1, err
			}
			return nil, p.line + 1, io.EOF
		}
		p.buf.Reset()
		if err := array.RecordToJSON(p.rr.RecordBatch(), &p.buf); err != nil {
			return nil, p.line + 1, err
		}
		p.br = bufio.NewReader(&p.buf)
	}
}
