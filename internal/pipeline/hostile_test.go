package pipeline

import (
	"io"
	"sync/atomic"
	"testing"
	"time"
)

// TestOrderedBoundsBytesInFlight feeds ordered 40 records of 16 MiB with a window of 256
// records, its worker holding the first record back: the records read and not yet emitted
// reach inFlightBytes plus the one the reader waits with, and no more, where a count alone
// would let all 640 MiB in.
func TestOrderedBoundsBytesInFlight(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 640 MiB through the pipeline")
	}
	const size = 16 << 20
	const records = 40
	buf := make([]byte, size)
	var read, emitted atomic.Int64
	var peak int64 // the reader's alone
	next := func() ([]byte, int64, error) {
		if read.Load() == records*size {
			return nil, 0, io.EOF
		}
		r := read.Add(size)
		if d := r - emitted.Load(); d > peak {
			peak = d
		}
		return buf, r / size, nil
	}
	work := func(it *item[int]) {
		if it.seq != 0 {
			return
		}
		// Hold the first record until the reader has read what the budget lets in plus
		// the record it waits with (a minute at most, so a too strict budget fails below
		// rather than hanging).
		deadline := time.Now().Add(time.Minute)
		for read.Load() < inFlightBytes+size && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	n := 0
	err := ordered(4, 256, next, work, func(it *item[int]) error {
		if it.seq != int64(n) {
			t.Fatalf("emitted %d at position %d", it.seq, n)
		}
		n++
		emitted.Add(size)
		return nil
	})
	if err != nil || n != records {
		t.Fatalf("emitted %d of %d records, err %v", n, records, err)
	}
	t.Logf("peak bytes read and not yet emitted: %d MiB", peak>>20)
	if peak != inFlightBytes+size {
		t.Errorf("%d MiB read ahead of the held record, want the budget (%d MiB) plus one record",
			peak>>20, inFlightBytes>>20)
	}
}
