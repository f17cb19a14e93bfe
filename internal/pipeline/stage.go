package pipeline

import (
	"errors"
	"io"
	"sync"

	"github.com/ktoloader/ktoloader/loader"
)

// item is one input row on its way through the workers: a row to tokenize, or the loader's
// verdict that it is bad. seq is its position in the input, which fixes the output order.
type item[T any] struct {
	seq  int64
	row  loader.Row
	bad  *loader.RowError
	out  T
	err  error // the worker's verdict on a valid row (template error, too long)
	done bool
}

// ordered runs work on every valid row with n workers and hands the results to emit in input
// order, so the output does not depend on n or on scheduling. At most window rows are in
// flight at once: memory is bounded by the window, not by the input. next yields rows as
// loader.Reader.Read does (a *loader.RowError for a bad row, io.EOF at the end, anything else
// is a stream error that ends the run). emit returning an error stops everything.
func ordered[T any](n, window int, next func() (loader.Row, error),
	work func(*loader.Row) (T, error),
	emit func(it *item[T]) error) error {
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
	var readErr error

	go func() { // the reader: the only goroutine touching next
		defer close(jobs)
		for seq := int64(0); ; seq++ {
			select {
			case slots <- struct{}{}:
			case <-stop:
				return
			}
			row, err := next()
			if err == io.EOF {
				<-slots
				return
			}
			it := &item[T]{seq: seq}
			var re *loader.RowError
			switch {
			case errors.As(err, &re):
				it.bad = re
			case err != nil:
				readErr = err
				<-slots
				return
			default:
				it.row = row
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
				if it.bad == nil {
					it.out, it.err = work(&it.row)
				}
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
			if err := emit(cur); err != nil {
				emitErr = err
				close(stop)
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
