//go:build linux

package topology

import (
	"syscall"
	"unsafe"
)

// sysProcAttr puts the child in its own process group (Ctrl-C in a terminal
// goes to the caller, which stops the topology in order) and asks the kernel
// to SIGKILL it if the thread that started it dies, so a test binary killed
// by `go test -timeout` leaves no Redis behind. Pdeathsig follows the OS
// thread, not the process; the Go runtime only retires threads of goroutines
// that exit while locked with runtime.LockOSThread, which this package never
// does.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// waitExited blocks until the child pid has exited, without reaping it
// (waitid with WNOWAIT), so its PID, and with it the process group ID, stays
// reserved until the caller has recorded the exit. That makes signalling the
// group by ID safe from PID reuse.
func waitExited(pid int) error {
	const pPID = 1
	var info [128]byte // siginfo_t
	for {
		_, _, errno := syscall.Syscall6(syscall.SYS_WAITID, pPID, uintptr(pid),
			uintptr(unsafe.Pointer(&info)), syscall.WEXITED|syscall.WNOWAIT, 0, 0)
		switch errno {
		case 0:
			return nil
		case syscall.EINTR:
			continue
		default:
			return errno
		}
	}
}
