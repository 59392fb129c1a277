//! The calls every thread of berth makes once it runs (`COMMON`), and those of the control
//! loop and the helper threads (`CONTROL`). docs/sandboxing.md has the lists with reasons.

use sandbox::seccomp::Allow;

/// Every thread: logging, locks and channels, memory, time, signals, its own end.
pub const COMMON: &[Allow] = &[
    // Log lines to stderr, the serial port's output, eventfd signals and reads.
    Allow::Call(libc::SYS_read),
    Allow::Call(libc::SYS_write),
    // Mutexes, condvars, channels, joins.
    Allow::Call(libc::SYS_futex),
    Allow::Call(libc::SYS_sched_yield),
    // The allocator.
    Allow::Call(libc::SYS_mmap),
    Allow::Call(libc::SYS_munmap),
    Allow::Call(libc::SYS_mremap),
    Allow::Call(libc::SYS_mprotect),
    Allow::Call(libc::SYS_madvise),
    Allow::Call(libc::SYS_brk),
    // Timeouts and timestamps (the vDSO answers most without a system call).
    Allow::Call(libc::SYS_clock_gettime),
    Allow::Call(libc::SYS_clock_nanosleep),
    // The vCPU kick signal's handler returns; signal masks around it.
    Allow::Call(libc::SYS_rt_sigreturn),
    Allow::Call(libc::SYS_rt_sigprocmask),
    // Dropping an fd (an eventfd, a socket, a file) as a device or the VM goes away.
    Allow::Call(libc::SYS_close),
    // ... and, in a debug build, std's check that the fd is open before it closes it.
    Allow::CallWithArg1(libc::SYS_fcntl, libc::F_GETFD as u64),
    // A thread's end (glibc frees its stack and signal stack), the process's end.
    Allow::Call(libc::SYS_sigaltstack),
    Allow::Call(libc::SYS_exit),
    Allow::Call(libc::SYS_exit_group),
];

/// The control loop and the helper threads.
pub const CONTROL: &[Allow] = &[
    // vhost-user messages and the fds they carry; the watchdog shuts a hung socket down.
    Allow::Call(libc::SYS_sendmsg),
    Allow::Call(libc::SYS_recvmsg),
    Allow::Call(libc::SYS_shutdown),
    // Waiting: for a device's pidfd and a reply (poll), for call fds (epoll), for stdin.
    Allow::Call(libc::SYS_ppoll),
    #[cfg(target_arch = "x86_64")]
    Allow::Call(libc::SYS_poll),
    Allow::Call(libc::SYS_epoll_ctl),
    Allow::Call(libc::SYS_epoll_pwait),
    #[cfg(target_arch = "x86_64")]
    Allow::Call(libc::SYS_epoll_wait),
    // Reaping a device process (waitid on its pidfd), killing one that misbehaves.
    Allow::Call(libc::SYS_waitid),
    Allow::Call(libc::SYS_wait4),
    Allow::Call(libc::SYS_pidfd_send_signal),
    // Kicking vCPU threads out of the guest to stop them (pthread_kill).
    Allow::Call(libc::SYS_tgkill),
    Allow::Call(libc::SYS_getpid),
    Allow::Call(libc::SYS_gettid),
    // Duplicating an eventfd (try_clone) for a queue's wiring.
    Allow::Call(libc::SYS_fcntl),
];
