//go:build linux && !amd64

package native_test

// sysPoll is -1 where tcpdump's wait is not recognised by number: arm64, riscv64 and loong64
// have no poll(2) (glibc's poll calls ppoll(2), recognised as such); give the number here for
// an architecture that has one.
const sysPoll = -1
