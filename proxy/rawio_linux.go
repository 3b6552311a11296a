//go:build linux

package proxy

import (
	"syscall"
	"unsafe"
)

// rawIOMax is the largest read or write done without the scheduler's
// bookkeeping: copying more takes long enough that the thread had better be
// free to run other goroutines meanwhile.
const rawIOMax = 64 << 10

// rawRead reads from the non-blocking socket fd (EINTR retried).
func rawRead(fd uintptr, p []byte) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	for {
		var n uintptr
		var e syscall.Errno
		if len(p) > rawIOMax {
			n, _, e = syscall.Syscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		} else {
			n, _, e = syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		}
		if e != syscall.EINTR {
			if e != 0 {
				return 0, e
			}
			return int(n), 0
		}
	}
}

// rawWrite writes to the non-blocking socket fd (EINTR retried); p is not
// empty.
func rawWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	for {
		var n uintptr
		var e syscall.Errno
		if len(p) > rawIOMax {
			n, _, e = syscall.Syscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		} else {
			n, _, e = syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		}
		if e != syscall.EINTR {
			if e != 0 {
				return 0, e
			}
			return int(n), 0
		}
	}
}
