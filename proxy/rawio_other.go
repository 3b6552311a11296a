//go:build !linux

package proxy

import (
	"errors"
	"syscall"
)

// rawRead reads from the non-blocking socket fd (EINTR retried).
func rawRead(fd uintptr, p []byte) (int, syscall.Errno) {
	for {
		n, err := syscall.Read(int(fd), p)
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

// rawWrite writes to the non-blocking socket fd (EINTR retried).
func rawWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	for {
		n, err := syscall.Write(int(fd), p)
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
