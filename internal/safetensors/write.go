package safetensors

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"unicode/utf8"

	"github.com/ktoloader/ktoloader/internal/jsonstr"
)

// Tensor is one tensor to write: either Data (exactly the tensor's byte size) or Write,
// which must write exactly the tensor's byte size to w, so that large tensors can be
// produced piecewise (a merged 7B model is never held in memory). A tensor of zero bytes
// may have neither.
type Tensor struct {
	Name  string
	DType DType
	Shape []int
	Data  []byte
	Write func(w io.Writer) error
}

// WriteFile writes ts and metadata to path as one safetensors file, atomically: under a
// temporary name in the same directory, synced, renamed over path, the directory synced.
//
// The bytes are those of the Rust crate's serialize (which Python's save_file calls):
// tensors laid out by dtype rank descending then by name, the header a compact JSON object
// with __metadata__ first (present iff metadata is non-nil) and then the tensors in layout
// order, each as {"dtype","shape","data_offsets"}, padded with spaces to a multiple of 8.
// One difference: the crate writes metadata keys in HashMap order, which varies from run
// to run; here they are sorted, so with one key (PEFT's {"format":"pt"}) the bytes are the
// same and with more they are at least deterministic.
func WriteFile(path string, ts []Tensor, metadata map[string]string) error {
	if _, err := checkTensors(path, ts); err != nil {
		return err
	}
	return writeFile(path, ts, metadata)
}

// checkTensors validates ts for writing to path and returns each tensor's byte size.
func checkTensors(path string, ts []Tensor) ([]int64, error) {
	fail := func(name, detail string, args ...any) ([]int64, error) {
		return nil, &Error{File: path, Tensor: name, Err: ErrTensor, Detail: fmt.Sprintf(detail, args...)}
	}
	sizes := make([]int64, len(ts))
	seen := make(map[string]bool, len(ts))
	for i, t := range ts {
		switch {
		case t.Name == "":
			return fail("", "tensor %d has no name", i)
		case t.Name == metadataKey:
			return fail(t.Name, "the name is reserved for the header's metadata")
		case !utf8.ValidString(t.Name):
			return fail(t.Name, "the name is not valid UTF-8")
		case seen[t.Name]:
			return fail(t.Name, "duplicate name")
		case !t.DType.Known():
			return fail(t.Name, "unknown dtype %q", t.DType)
		case t.Data != nil && t.Write != nil:
			return fail(t.Name, "both Data and Write are set")
		}
		seen[t.Name] = true
		n, err := byteSize(t.Shape, t.DType)
		if err != nil {
			return fail(t.Name, "%v", err)
		}
		if t.Write == nil && int64(len(t.Data)) != n {
			return fail(t.Name, "Data holds %d bytes, shape %v of %s is %d bytes", len(t.Data), t.Shape, t.DType, n)
		}
		sizes[i] = n
	}
	return sizes, nil
}

// layout orders ts as the Rust crate's prepare() does: dtype rank descending, then name.
func layout(ts []Tensor) []int {
	order := make([]int, len(ts))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		ra, rb := dtypeInfo[ts[order[a]].DType].rank, dtypeInfo[ts[order[b]].DType].rank
		if ra != rb {
			return ra > rb
		}
		return ts[order[a]].Name < ts[order[b]].Name
	})
	return order
}

// header builds the padded header JSON for ts laid out in order.
func header(ts []Tensor, order []int, metadata map[string]string) []byte {
	b := []byte{'{'}
	if metadata != nil {
		b = appendSerdeString(b, metadataKey)
		b = append(b, ':', '{')
		keys := make([]string, 0, len(metadata))
		for k := range metadata {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendSerdeString(b, k)
			b = append(b, ':')
			b = appendSerdeString(b, metadata[k])
		}
		b = append(b, '}')
		if len(ts) > 0 {
			b = append(b, ',')
		}
	}
	var offset int64
	for j, i := range order {
		t := ts[i]
		n, _ := byteSize(t.Shape, t.DType) // checked by checkTensors
		if j > 0 {
			b = append(b, ',')
		}
		b = appendSerdeString(b, t.Name)
		b = append(b, `:{"dtype":`...)
		b = appendSerdeString(b, string(t.DType))
		b = append(b, `,"shape":[`...)
		for k, d := range t.Shape {
			if k > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, int64(d), 10)
		}
		b = append(b, `],"data_offsets":[`...)
		b = strconv.AppendInt(b, offset, 10)
		b = append(b, ',')
		b = strconv.AppendInt(b, offset+n, 10)
		b = append(b, ']', '}')
		offset += n
	}
	b = append(b, '}')
	for len(b)%8 != 0 {
		b = append(b, ' ')
	}
	return b
}

// appendSerdeString appends s quoted as serde_json writes strings: only '"', '\\' and
// control characters are escaped (\b \t \n \f \r, else \u00xx in lower-case hex); all else,
// non-ASCII included, is written as is. That is Python's ensure_ascii=False escaping too.
func appendSerdeString(b []byte, s string) []byte { return jsonstr.Append(b, s) }

// writeFile writes already checked tensors.
func writeFile(path string, ts []Tensor, metadata map[string]string) error {
	order := layout(ts)
	hdr := header(ts, order, metadata)
	return writeAtomic(path, func(w io.Writer) error {
		var lenBuf [8]byte
		binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(hdr)))
		if _, err := w.Write(lenBuf[:]); err != nil {
			return err
		}
		if _, err := w.Write(hdr); err != nil {
			return err
		}
		for _, i := range order {
			t := ts[i]
			if t.Write == nil {
				if _, err := w.Write(t.Data); err != nil {
					return err
				}
				continue
			}
			n, _ := byteSize(t.Shape, t.DType)
			cw := &exactWriter{w: w, left: n}
			if err := t.Write(cw); err != nil {
				if cw.over {
					return &Error{File: path, Tensor: t.Name, Err: ErrTensor,
						Detail: fmt.Sprintf("Write wrote more than the tensor's %d bytes", n)}
				}
				return &Error{File: path, Tensor: t.Name, Err: err, Detail: "writing the tensor's data"}
			}
			if cw.left != 0 {
				return &Error{File: path, Tensor: t.Name, Err: ErrTensor,
					Detail: fmt.Sprintf("Write wrote %d bytes, the tensor is %d bytes", n-cw.left, n)}
			}
		}
		return nil
	})
}

// exactWriter passes at most left bytes through and refuses a write that would exceed it,
// so that a wrong Write cannot shift every tensor after it.
type exactWriter struct {
	w    io.Writer
	left int64
	over bool
}

var errTooMuch = errors.New("write past the tensor's size")

func (e *exactWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > e.left {
		e.over = true
		return 0, errTooMuch
	}
	n, err := e.w.Write(p)
	e.left -= int64(n)
	return n, err
}

// writeAtomic writes path through fill into a temporary file in the same directory,
// named with the process id so that concurrent writers never share one, then syncs,
// renames and syncs the directory. On any error the temporary file is removed and path is
// untouched.
func writeAtomic(path string, fill func(io.Writer) error) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-"+strconv.Itoa(os.Getpid())+"-*")
	if err != nil {
		return &Error{File: path, Err: err, Detail: "creating a temporary file"}
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	if err := fill(bw); err != nil {
		var e *Error
		if errors.As(err, &e) {
			return err
		}
		return &Error{File: path, Err: err, Detail: "writing"}
	}
	if err := bw.Flush(); err != nil {
		return &Error{File: path, Err: err, Detail: "writing"}
	}
	if err := f.Chmod(0o644); err != nil { // CreateTemp's 0600 would hide outputs from other users
		return &Error{File: path, Err: err}
	}
	if err := f.Sync(); err != nil {
		return &Error{File: path, Err: err, Detail: "syncing"}
	}
	if err := f.Close(); err != nil {
		return &Error{File: path, Err: err, Detail: "closing"}
	}
	if err := os.Rename(tmp, path); err != nil {
		return &Error{File: path, Err: err, Detail: "renaming into place"}
	}
	if err := syncDir(dir); err != nil {
		return &Error{File: dir, Err: err, Detail: "syncing the directory"}
	}
	return nil
}

// syncDir makes a rename in dir durable. Filesystems that cannot sync a directory say
// EINVAL; that is no reason to fail.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) {
		return nil
	}
	return err
}
