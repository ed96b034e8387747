//go:build !linux

package peers

// threadCPU is not measured on this system: cpu-ns/op reports 0.
func threadCPU() int64 { return 0 }
