package main

import (
	"os"
	"runtime"
	"runtime/pprof"
)

// profiled runs fn under the hidden --cpuprofile/--memprofile flags of prep and train: a CPU
// profile of fn when cpu is set, the allocation profile after it when mem is set. fn's
// error wins over a profile's.
func profiled(cpu, mem string, fn func() error) (err error) {
	if cpu != "" {
		pf, err := os.Create(cpu)
		if err != nil {
			return err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	err = fn()
	if mem != "" {
		if perr := writeHeapProfile(mem); perr != nil && err == nil {
			err = perr
		}
	}
	return err
}

// writeHeapProfile writes the allocation profile. The runtime publishes a profile's samples
// only at the end of a garbage collection, and prep runs with GOGC=1000, so without the
// collection here the profile missed most of a run (a 20 MB row showed 52 MB allocated of 434).
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
