package peers

import "syscall"

// threadCPU returns the CPU time the calling thread has used, in
// nanoseconds: unlike the wall clock it does not count the time the thread
// waits for a core, which on a machine shared with other work is most of
// the noise of a serial benchmark.
func threadCPU() int64 {
	const rusageThread = 1 // RUSAGE_THREAD
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0
	}
	return syscall.TimevalToNsec(ru.Utime) + syscall.TimevalToNsec(ru.Stime)
}
