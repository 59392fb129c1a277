//! A short-lived helper process in fresh user and mount namespaces that hands back one file
//! descriptor over SCM_RIGHTS.
//!
//! `unshare(CLONE_NEWUSER)` is refused to a multi-threaded process, and berth has threads, so
//! the namespaces belong to a forked child, which is single-threaded by construction. The
//! child runs only system calls (no allocation, no locks: it may be the fork of a threaded
//! process), maps the caller's uid and gid to 0 inside (setgroups denied, as an unprivileged
//! process must), makes its mounts private, runs the job, sends the job's fd and exits. The
//! fd keeps whatever it refers to (a file on a tmpfs mounted in there) alive after the
//! namespaces are gone.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use crate::{Error, Result};

/// Names of the helper's own steps, for error messages; job steps come after them.
const STEPS: [&str; 5] = [
    "unshare(CLONE_NEWUSER | CLONE_NEWNS)",
    "writing /proc/self/setgroups",
    "writing /proc/self/uid_map",
    "writing /proc/self/gid_map",
    "making mounts private",
];
const DONE: u32 = u32::MAX;

/// A failed job step: its index in the job's step names, and errno.
pub type JobFailure = (u32, i32);

/// Runs `job` in a forked child inside new user and mount namespaces and returns the fd it
/// produced. `job_steps` names the job's steps; the job reports a failure as an index into it
/// and errno. The job runs after fork: it must make system calls only (no allocation, no
/// locks), with everything it needs prepared beforehand.
pub fn run<F>(job_steps: &'static [&'static str], job: F) -> Result<OwnedFd>
where
    F: FnOnce() -> std::result::Result<RawFd, JobFailure>,
{
    // SAFETY: geteuid and getegid have no preconditions.
    let (uid, gid, root) = unsafe { (libc::geteuid(), libc::getegid(), libc::geteuid() == 0) };
    let uid_map = format!("0 {uid} 1");
    let gid_map = format!("0 {gid} 1");
    let mut fds = [-1; 2];
    // SAFETY: socketpair writes two fds into the array it is given.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } != 0
    {
        return Err(Error::Socket(io::Error::last_os_error()));
    }
    // SAFETY: both fds are new and owned by nothing else.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the child only makes system calls on memory prepared before the fork, then
    // _exits; the parent only waits for it.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::Fork(io::Error::last_os_error()));
    }
    if pid == 0 {
        use std::os::fd::AsRawFd;
        // SAFETY: the child of the fork; see child().
        unsafe { child(theirs.as_raw_fd(), root, &uid_map, &gid_map, job) }
    }
    drop(theirs);
    let answer = receive(&ours);
    let mut status = 0;
    // SAFETY: reaps the child we forked; it exits right after sending.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
    {}
    match answer? {
        (DONE, _, Some(fd)) => Ok(fd),
        (DONE, _, None) => Err(Error::NoAnswer),
        (step, errno, _) => {
            let i = step as usize;
            let name = STEPS
                .get(i)
                .or_else(|| job_steps.get(i.wrapping_sub(STEPS.len())))
                .copied()
                .unwrap_or("an unknown step");
            Err(Error::Helper {
                step: name,
                source: io::Error::from_raw_os_error(errno),
            })
        }
    }
}

/// The child's side. Never returns.
///
/// # Safety
/// Only in the child of a fork; `sock` is the child's end of the socket pair.
unsafe fn child<F>(sock: RawFd, root: bool, uid_map: &str, gid_map: &str, job: F) -> !
where
    F: FnOnce() -> std::result::Result<RawFd, JobFailure>,
{
    let fail = |step: u32| -> ! {
        // SAFETY: __errno_location is the thread's errno; the send and _exit are syscalls.
        unsafe {
            let errno = *libc::__errno_location();
            send(sock, step, errno, None);
            libc::_exit(1)
        }
    };
    // SAFETY: plain system calls on NUL-terminated literals and the caller's buffers.
    unsafe {
        if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) == 0 {
            for (i, (path, data)) in [
                (c"/proc/self/setgroups", "deny"),
                (c"/proc/self/uid_map", uid_map),
                (c"/proc/self/gid_map", gid_map),
            ]
            .into_iter()
            .enumerate()
            {
                if !write_file(path, data.as_bytes()) {
                    fail(1 + i as u32);
                }
            }
        } else if !root || libc::unshare(libc::CLONE_NEWNS) != 0 {
            // Root without user namespaces (a sysctl may forbid them) still has a mount
            // namespace of its own.
            fail(0);
        }
        if libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            fail(4);
        }
        match job() {
            Ok(fd) => {
                send(sock, DONE, 0, Some(fd));
                libc::_exit(0)
            }
            Err((step, errno)) => {
                send(sock, STEPS.len() as u32 + step, errno, None);
                libc::_exit(1)
            }
        }
    }
}

/// Writes `data` to `path` in one write(2).
///
/// # Safety
/// Plain system calls; callable after fork.
unsafe fn write_file(path: &std::ffi::CStr, data: &[u8]) -> bool {
    // SAFETY: path is NUL-terminated; data is a valid buffer of its length.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let ok = libc::write(fd, data.as_ptr().cast(), data.len()) == data.len() as isize;
        libc::close(fd);
        ok
    }
}

/// Sends (step, errno) and optionally `fd` as one datagram.
///
/// # Safety
/// Plain system calls on stack buffers; callable after fork.
unsafe fn send(sock: RawFd, step: u32, errno: i32, fd: Option<RawFd>) {
    let mut payload = [0u8; 8];
    payload[..4].copy_from_slice(&step.to_ne_bytes());
    payload[4..].copy_from_slice(&errno.to_ne_bytes());
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    // Room for one SCM_RIGHTS int, u64-aligned as cmsghdr needs.
    let mut control = [0u64; 4];
    // SAFETY: msghdr is plain data; all-zero is its empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        // SAFETY: the control buffer is large and aligned enough for one cmsghdr with an int;
        // CMSG_* compute offsets inside it.
        unsafe {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(4) as _;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(4) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd);
        }
    }
    // SAFETY: msg points at live stack buffers.
    unsafe { libc::sendmsg(sock, &msg, 0) };
}

/// Receives the child's (step, errno, fd).
fn receive(sock: &OwnedFd) -> Result<(u32, i32, Option<OwnedFd>)> {
    use std::os::fd::AsRawFd;
    let mut payload = [0u8; 8];
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    let mut control = [0u64; 4];
    // SAFETY: msghdr is plain data; all-zero is its empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    let n = loop {
        // SAFETY: msg points at live buffers of the sizes it states.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(Error::Receive(e));
        }
    };
    if n < payload.len() {
        return Err(Error::NoAnswer);
    }
    let mut fd = None;
    // SAFETY: the kernel filled msg_control; CMSG_* walk it within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let raw = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<RawFd>());
                fd = Some(OwnedFd::from_raw_fd(raw));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let step = u32::from_ne_bytes(payload[..4].try_into().unwrap_or_default());
    let errno = i32::from_ne_bytes(payload[4..].try_into().unwrap_or_default());
    Ok((step, errno, fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn hands_back_the_jobs_fd() {
        let fd = run(&["open"], || {
            // SAFETY: open of a literal path.
            let fd = unsafe { libc::open(c"/proc/self/status".as_ptr(), libc::O_RDONLY) };
            if fd < 0 {
                // SAFETY: errno of this thread.
                Err((0, unsafe { *libc::__errno_location() }))
            } else {
                Ok(fd)
            }
        })
        .expect("user namespaces work on this machine");
        assert!(fd.as_raw_fd() >= 0);
    }

    #[test]
    fn a_failing_job_step_is_named_with_its_errno() {
        let e = run(&["first", "second"], || Err((1, libc::EACCES))).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("second"), "{text}");
        assert!(text.contains("ermission denied"), "{text}");
    }
}
