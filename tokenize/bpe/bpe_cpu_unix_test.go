//go:build unix

package bpe

import (
	"syscall"
	"time"
)

// processCPU is the CPU time (user + system) the test process has used so far: on a busy
// machine it measures the encoder's work better than the wall clock does.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
