//go:build unix

package train

import (
	"syscall"
	"time"
)

// processCPU is the CPU time (user + system) the test process has used so far: on a machine
// that other work keeps busy it measures a step's work better than the wall clock.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
