//go:build !linux

package proxy

import (
	"errors"
	"syscall"
)

// rawRead reads from the non-blocking socket fd (EINTR retried).
func rawRead(fd uintptr, p []byte) (int, syscall.Errno) {
	return retryIO(syscall.Read, fd, p)
}

// rawWrite writes to the non-blocking socket fd (EINTR retried).
func rawWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	return retryIO(syscall.Write, fd, p)
}

// retryIO calls op on fd with p until it is not interrupted.
func retryIO(op func(int, []byte) (int, error), fd uintptr, p []byte) (int, syscall.Errno) {
	for {
		n, err := op(int(fd), p)
		var e syscall.Errno
		if err != nil && !errors.As(err, &e) {
			e = syscall.EIO
		}
		if e != syscall.EINTR {
			if e != 0 {
				return 0, e
			}
			return n, 0
		}
	}
}
