package pipeline

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ktoloader/ktoloader/export"
	"github.com/ktoloader/ktoloader/kto"
)

// TestPartitionedRun forces partitioned planning on the sample (partitions of 40 examples:
// keys on disk, about five partitions, strata of one or two examples each) and checks it against an unpartitioned run of the same
// input: the same examples (multiset of ids and label) are written, the counts agree, verify
// passes (so every batch but each split's last is full and KL pairs hold), no prompt is on
// both sides of the split, the realized test fraction stays near the asked one, --workers
// does not change a byte, and no temporary file is left behind.
func TestPartitionedRun(t *testing.T) {
	tok := demoTok(t)
	kc := kto.Config{TestFrac: 0.2, Seed: 5, MaxLen: 1024}
	dir := t.TempDir()
	whole := run(t, Config{Inputs: sampleInputs(), Tokenizer: tok, Out: filepath.Join(dir, "whole"), KTO: kc, Workers: 2})
	want := map[string]int{}
	countRows(t, filepath.Join(dir, "whole"), whole, want, map[string]string{})

	var first map[string][]byte
	for _, workers := range []int{1, 2} {
		out := filepath.Join(dir, "parts", string(rune('0'+workers)))
		m := run(t, Config{Inputs: sampleInputs(), Tokenizer: tok, Out: out, KTO: kc, Workers: workers, PartitionSize: 40})
		files := readDir(t, out)
		for name := range files {
			if strings.Contains(name, ".tmp-") {
				t.Errorf("temporary file left: %s", name)
			}
		}
		if first != nil {
			if len(files) != len(first) {
				t.Fatalf("workers=%d: %d files, workers=1: %d", workers, len(files), len(first))
			}
			for name, b := range first {
				if !bytes.Equal(files[name], b) {
					t.Errorf("workers=%d: %s differs from workers=1", workers, name)
				}
			}
			continue
		}
		first = files
		if n := m.Counts.Notes[NotePlanningPartitions]; n < 2 {
			t.Fatalf("planned in %d partitions, want several", n)
		}
		if n := whole.Counts.Notes[NotePlanningPartitions]; n != 0 {
			t.Errorf("the default run noted %d planning partitions", n)
		}
		if m.Counts.Read != whole.Counts.Read || m.Counts.Written != whole.Counts.Written || m.Counts.Rejected != whole.Counts.Rejected {
			t.Errorf("counts: partitioned %+v, whole %+v", m.Counts, whole.Counts)
		}
		rep, err := export.Verify(out)
		if err != nil || !rep.OK() {
			t.Fatalf("verify: %v %+v", err, rep)
		}
		got := map[string]int{}
		countRows(t, out, m, got, map[string]string{})
		rows := ktoRows(t, out, m)
		if len(got) != len(want) {
			t.Errorf("%d distinct examples, unpartitioned run %d", len(got), len(want))
		}
		for k, n := range want {
			if got[k] != n {
				t.Errorf("example written %d times, unpartitioned run %d: %.80s", got[k], n, k)
			}
		}
		// Batches: consecutive indexes from 0, all full but the last.
		bs := int64(8)
		for split, rs := range rows {
			size := map[int64]int64{}
			for _, r := range rs {
				size[r.BatchIndex]++
			}
			n := int64(len(size))
			for b := range n {
				if size[b] == 0 || (b < n-1 && size[b] != bs) {
					t.Errorf("%s batch %d of %d holds %d rows", split, b, n, size[b])
				}
			}
			if info := m.KTO.Splits[split]; info.Batches != n || info.Examples != int64(len(rs)) || info.LastBatch != size[n-1] {
				t.Errorf("%s: manifest %+v, rows say %d batches, %d examples, last %d", split, info, n, len(rs), size[n-1])
			}
		}
		test, all := len(rows["test"]), len(rows["test"])+len(rows["train"])
		// Each partition's strata hold one or two examples: without the carry between
		// partitions (kto.SplitCarry) they all round to no test at all (0.09 measured).
		frac := float64(test) / float64(all)
		t.Logf("test fraction %.3f over %d partitions", frac, m.Counts.Notes[NotePlanningPartitions])
		if frac < 0.15 || frac > 0.25 {
			t.Errorf("test fraction %.3f, asked 0.2", frac)
		}
	}

	// With --drop-last, the dropped examples are rejected, as in one partition.
	out := filepath.Join(dir, "droplast")
	m := run(t, Config{Inputs: sampleInputs()[:1], Tokenizer: tok, Out: out, PartitionSize: 30,
		KTO: kto.Config{BatchSize: 5, DropLast: true, MaxLen: 1024}})
	if c := m.Counts; c.Read != c.Written+c.Rejected || c.Written%5 != 0 {
		t.Errorf("drop-last counts %+v", c)
	}
	if rep, err := export.Verify(out); err != nil || !rep.OK() {
		t.Fatalf("verify: %v %+v", err, rep)
	}
	if _, err := os.Stat(filepath.Join(out, "manifest.json")); err != nil {
		t.Fatal(err)
	}
}

// TestKeyStorePartitions checks the bucket grouping: consecutive buckets up to the size, a
// larger bucket alone, every bucket in exactly one partition.
func TestKeyStorePartitions(t *testing.T) {
	var ks keyStore
	for b := range numBuckets {
		ks.count[b] = 10
	}
	ks.count[5] = 100
	parts := ks.partitions(35)
	next := 0
	for _, p := range parts {
		if p[0] != next || p[1] <= p[0] {
			t.Fatalf("partitions not consecutive: %v", parts)
		}
		n := 0
		for b := p[0]; b < p[1]; b++ {
			n += ks.count[b]
		}
		if n > 35 && p[1]-p[0] != 1 {
			t.Errorf("partition %v holds %d keys", p, n)
		}
		next = p[1]
	}
	if next != numBuckets {
		t.Errorf("partitions end at bucket %d", next)
	}
}
