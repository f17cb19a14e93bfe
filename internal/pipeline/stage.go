package pipeline

import (
	"errors"
	"io"
	"sync"

	"github.com/ktoloader/ktoloader/loader"
)

// item is one input record on its way through the workers. seq is its position in the
// input, which fixes the output order. The reader fills data and line (or bad, for a line
// the reader itself refuses); a worker parses and processes the record and fills the rest.
type item[T any] struct {
	seq  int64
	data []byte // the raw record, owned by the item
	line int64
	row  loader.Row       // the parsed row (when bad is nil)
	bad  *loader.RowError // the loader's verdict on a bad record
	out  T
	err  error // the worker's verdict on a valid row (template error, too long)
	cost int64 // bytes of data counted against inFlightBytes until emitted
}

// inFlightBytes bounds the raw bytes of the records in flight, whatever the window: a
// record count alone would let Workers × 64 lines of --max-line-bytes (64 MiB) be held at
// once, 64 GiB on 16 cores. One record is always let through, however long.
const inFlightBytes = 256 << 20

// byteBudget is a counting semaphore of bytes that can be stopped.
type byteBudget struct {
	mu      sync.Mutex
	cond    sync.Cond
	used    int64
	max     int64
	stopped bool
}

func newByteBudget(max int64) *byteBudget {
	b := &byteBudget{max: max}
	b.cond.L = &b.mu
	return b
}

// acquire waits until n more bytes fit (or nothing is in flight); false once stopped.
func (b *byteBudget) acquire(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for !b.stopped && b.used > 0 && b.used+n > b.max {
		b.cond.Wait()
	}
	if b.stopped {
		return false
	}
	b.used += n
	return true
}

func (b *byteBudget) release(n int64) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
	b.cond.Broadcast()
}

func (b *byteBudget) stop() {
	b.mu.Lock()
	b.stopped = true
	b.mu.Unlock()
	b.cond.Broadcast()
}

// recordReader is what ordered reads: loader.Reader.ReadOwnedRecord, whose records are the
// item's to keep (a huge line is handed over, not copied).
type recordReader func() (data []byte, line int64, err error)

// ordered runs work on every record with n workers and hands the items to emit in input
// order, so the output does not depend on n or on scheduling. Parsing happens in work, on
// the workers: only the line splitting (and decompression) is serial. At most window records
// are in flight at once: memory is bounded by the window, not by the input. next yields
// records as loader.Reader.ReadOwnedRecord does (a *loader.RowError for a line it refuses, io.EOF
// at the end, anything else is a stream error that ends the run). emit returning an error
// stops everything.
func ordered[T any](n, window int, next recordReader, work func(*item[T]), emit func(it *item[T]) error) error {
	if n < 1 {
		n = 1
	}
	if window < n {
		window = n
	}
	jobs := make(chan *item[T], window)
	results := make(chan *item[T], window)
	slots := make(chan struct{}, window)
	stop := make(chan struct{})
	budget := newByteBudget(inFlightBytes)
	var readErr error

	go func() { // the reader: the only goroutine touching next
		defer close(jobs)
		for seq := int64(0); ; seq++ {
			select {
			case slots <- struct{}{}:
			case <-stop:
				return
			}
			data, line, err := next()
			if err == io.EOF {
				<-slots
				return
			}
			it := &item[T]{seq: seq, line: line}
			var re *loader.RowError
			switch {
			case errors.As(err, &re):
				it.bad = re
			case err != nil:
				readErr = err
				<-slots
				return
			default:
				it.cost = int64(len(data))
				if !budget.acquire(it.cost) {
					return
				}
				it.data = data
			}
			select {
			case jobs <- it:
			case <-stop:
				return
			}
		}
	}()

	var wg sync.WaitGroup
	for w := 0; w < n; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range jobs {
				work(it)
				select {
				case results <- it:
				case <-stop:
					return
				}
			}
		}()
	}
	go func() { wg.Wait(); close(results) }()

	pending := make(map[int64]*item[T], window)
	var want int64
	var emitErr error
	for it := range results {
		if emitErr != nil {
			continue
		}
		pending[it.seq] = it
		for {
			cur, ok := pending[want]
			if !ok {
				break
			}
			delete(pending, want)
			want++
			err := emit(cur)
			budget.release(cur.cost)
			if err != nil {
				emitErr = err
				close(stop)
				budget.stop()
				break
			}
			<-slots
		}
	}
	if emitErr != nil {
		return emitErr
	}
	return readErr
}
