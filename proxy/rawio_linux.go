//go:build linux

package proxy

import (
	"syscall"
	"unsafe"
)

// rawRead reads from the non-blocking socket fd (EINTR retried).
func rawRead(fd uintptr, p []byte) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	return rawIO(syscall.SYS_READ, fd, p)
}

// rawWrite writes to the non-blocking socket fd (EINTR retried); p is not
// empty.
func rawWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	return rawIO(syscall.SYS_WRITE, fd, p)
}

// rawIO makes the read or write system call trap on fd with p, without the
// scheduler's bookkeeping unless p is larger than rawIOMax.
func rawIO(trap, fd uintptr, p []byte) (int, syscall.Errno) {
	for {
		var n uintptr
		var e syscall.Errno
		if len(p) > rawIOMax {
			n, _, e = syscall.Syscall(trap, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		} else {
			n, _, e = syscall.RawSyscall(trap, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		}
		if e != syscall.EINTR {
			if e != 0 {
				return 0, e
			}
			return int(n), 0
		}
	}
}
