//! Starting a process in namespaces of its own: user, mount, pid (it is pid 1 there), an
//! empty network namespace, ipc, uts and cgroup. The parent writes the child's uid and gid maps
//! (inside 0 is the caller's own uid, or an unprivileged one when the caller is root), then
//! lets it go on; the child takes those ids and execs. The jail proper (an empty root, no
//! capabilities, seccomp) is set up by the program itself after exec ([`crate::lockdown`]),
//! before it touches anything untrusted.

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use crate::{Error, Result};

/// Who the jailed process is, seen from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
}

/// The uid and gid berth's device processes run as when berth is root: `nobody`, as
/// Firecracker's jailer and crosvm do by default. An ordinary user's devices run as that user.
pub const ROOT_JAIL_IDS: Ids = Ids {
    uid: 65534,
    gid: 65534,
};

/// What to start.
pub struct Command {
    /// The program, e.g. `/proc/self/exe`.
    pub program: CString,
    /// argv, argv\[0\] included.
    pub args: Vec<CString>,
    /// The environment, `NAME=value` each.
    pub env: Vec<CString>,
    /// (fd here, fd number in the child); every other fd must be close-on-exec.
    pub fds: Vec<(RawFd, RawFd)>,
}

/// A started process.
pub struct Child {
    /// Its pid in the caller's pid namespace.
    pub pid: libc::pid_t,
    pub pidfd: OwnedFd,
    /// Held open while the caller lives: the child checks it, once its death signal is set,
    /// to see that the caller did not die before.
    _alive: OwnedFd,
}

/// The namespaces every jailed process gets.
const NAMESPACES: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP;

/// The ids a jailed child of this process runs as.
pub fn jail_ids() -> Ids {
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if uid == 0 {
        ROOT_JAIL_IDS
    } else {
        Ids { uid, gid }
    }
}

/// Starts `cmd` in new namespaces. The child dies with SIGKILL if the calling thread does
/// (PR_SET_PDEATHSIG, set after the child's change of ids, which would clear it), and never
/// runs if the caller dies before that.
pub fn spawn(cmd: &Command) -> Result<Child> {
    let ids = jail_ids();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    // Everything the child uses is built before the clone: it may not allocate.
    let mut argv: Vec<*const libc::c_char> = cmd.args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = cmd.env.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    if cmd.fds.len() > 16 {
        return Err(Error::Spawn(io::Error::from_raw_os_error(libc::E2BIG)));
    }
    let above = cmd.fds.iter().map(|&(_, t)| t).max().unwrap_or(0) + 1;
    let mut go = [-1; 2];
    // SAFETY: pipe2 fills two fds.
    if unsafe { libc::pipe2(go.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::Spawn(io::Error::last_os_error()));
    }
    // SAFETY: both are new fds owned by nothing else.
    let (go_rx, go_tx) = unsafe { (OwnedFd::from_raw_fd(go[0]), OwnedFd::from_raw_fd(go[1])) };
    // SAFETY: a fork-like clone (no CLONE_VM, no new stack): the child has a copy of this
    // address space and runs only `child`, which makes system calls on memory prepared above
    // and then execs or exits.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (NAMESPACES | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(Error::Spawn(io::Error::last_os_error()));
    }
    if pid == 0 {
        use std::os::fd::AsRawFd;
        // SAFETY: in the child of the clone; see child().
        unsafe { child(go_rx.as_raw_fd(), root, cmd, &argv, &envp, above) }
    }
    let pid = pid as libc::pid_t;
    drop(go_rx);
    // The child is stopped at its read of `go` until the maps are written.
    let write = |file: &str, data: String| {
        std::fs::write(format!("/proc/{pid}/{file}"), data).map_err(|e| Error::Helper {
            step: "writing the jailed process's id maps",
            source: e,
        })
    };
    let mapped = (|| {
        if !root {
            // An unprivileged process may map only its own ids, and only with setgroups off.
            write("setgroups", "deny".into())?;
        }
        write("uid_map", format!("0 {} 1", ids.uid))?;
        write("gid_map", format!("0 {} 1", ids.gid))
    })();
    if let Err(e) = mapped {
        // SAFETY: kills and reaps the child we just started.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        return Err(e);
    }
    // SAFETY: pidfd_open of our own child; checked.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if raw < 0 {
        return Err(Error::Spawn(io::Error::last_os_error()));
    }
    // SAFETY: a new fd owned by nothing else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw as RawFd) };
    use std::os::fd::AsRawFd;
    // SAFETY: one byte from a live buffer to our pipe.
    unsafe { libc::write(go_tx.as_raw_fd(), b"g".as_ptr().cast(), 1) };
    Ok(Child {
        pid,
        pidfd,
        _alive: go_tx,
    })
}

/// The child's side: waits for its maps, takes its ids, puts its fds in place and execs.
///
/// # Safety
/// Only in the child of the clone; only system calls on the caller's prepared memory.
unsafe fn child(
    go: RawFd,
    root: bool,
    cmd: &Command,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    above: RawFd,
) -> ! {
    // SAFETY: system calls on integers and memory prepared before the clone.
    unsafe {
        let mut b = 0u8;
        // EOF: the parent died before setting us up.
        if libc::read(go, (&mut b as *mut u8).cast(), 1) != 1 {
            libc::_exit(121);
        }
        // Become the mapped ids: uid 0 inside, the jail's unprivileged uid outside. Without
        // this the process would keep its old credentials outside the namespace. Raw system
        // calls, not glibc's wrappers: those change the ids of every thread glibc knows of
        // (a signal to each, then a wait), and after a raw clone of a multi-threaded
        // parent glibc still lists the parent's threads, so they would wait for ever.
        if root && libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) != 0
        {
            libc::_exit(122);
        }
        if libc::syscall(libc::SYS_setresgid, 0u32, 0u32, 0u32) != 0
            || libc::syscall(libc::SYS_setresuid, 0u32, 0u32, 0u32) != 0
        {
            libc::_exit(123);
        }
        // After the change of ids, which clears a parent-death signal set before it.
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            libc::_exit(120);
        }
        // A parent that died before the prctl sent no signal: its end of `go` is closed.
        let mut pfd = libc::pollfd {
            fd: go,
            events: libc::POLLIN,
            revents: 0,
        };
        if libc::poll(&mut pfd, 1, 0) != 0 && pfd.revents & libc::POLLHUP != 0 {
            libc::_exit(121);
        }
        let mut moved = [0 as RawFd; 16];
        for (i, &(src, _)) in cmd.fds.iter().enumerate() {
            let m = libc::fcntl(src, libc::F_DUPFD_CLOEXEC, above);
            if m < 0 {
                libc::_exit(124);
            }
            moved[i] = m;
        }
        for (i, &(_, target)) in cmd.fds.iter().enumerate() {
            if libc::dup2(moved[i], target) < 0 {
                libc::_exit(125);
            }
        }
        libc::execve(cmd.program.as_ptr(), argv.as_ptr(), envp.as_ptr());
        libc::_exit(126)
    }
}

/// What a jailed child's early exit code means (set up before exec).
pub fn describe_setup_exit(code: i32) -> Option<&'static str> {
    Some(match code {
        120 => "PR_SET_PDEATHSIG failed",
        121 => "berth went away before the process was set up",
        122 => "dropping supplementary groups failed",
        123 => "taking the jail's uid and gid failed",
        124 | 125 => "passing its file descriptors failed",
        126 => "exec of berth failed",
        _ => return None,
    })
}
