//! Device processes: berth's own binary re-executed with the hidden `device` subcommand (not
//! a fork of the threaded VMM), given only its socket and its resources as inherited fds, and
//! watched through a pidfd until it ends.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc::Sender;

use crate::events::VmEvent;

/// A started device process.
pub struct DeviceProcess {
    pub pid: u32,
    child: std::process::Child,
    pidfd: OwnedFd,
}

/// Starts `berth device ARGS` with `fds` (source, number in the child) inherited and every
/// other fd closed (they are all close-on-exec). The child dies with SIGKILL when berth
/// does: PR_SET_PDEATHSIG fires when the thread that forked exits, so call this from a thread
/// that lives as long as the VM (the main thread), and the child checks that its parent is
/// still the one that forked it.
pub fn spawn(args: &[String], fds: &[(RawFd, RawFd)]) -> io::Result<DeviceProcess> {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    let fds = fds.to_vec();
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("berth")
        .arg("device")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: between fork and exec the closure makes only async-signal-safe system calls
    // (prctl, getppid, fcntl, dup2) on integers it owns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                // berth died before the prctl: nobody would ever stop this process.
                libc::_exit(1);
            }
            map_fds(&fds)
        });
    }
    let child = cmd.spawn()?;
    let pid = child.id();
    // SAFETY: pidfd_open takes a pid and flags; the result is checked and owned below.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd owned by nothing else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw as RawFd) };
    Ok(DeviceProcess { pid, child, pidfd })
}

/// Puts each (source, target) fd at its target number without close-on-exec. Sources are
/// first moved above every target so that no target overwrites a source still needed.
///
/// # Safety (of use)
/// Called between fork and exec: only fcntl and dup2.
fn map_fds(fds: &[(RawFd, RawFd)]) -> io::Result<()> {
    let above = fds.iter().map(|&(_, t)| t).max().unwrap_or(0) + 1;
    let mut moved = [0 as RawFd; 16];
    if fds.len() > moved.len() {
        return Err(io::Error::from_raw_os_error(libc::E2BIG));
    }
    for (i, &(src, _)) in fds.iter().enumerate() {
        // SAFETY: duplicates an fd this process holds; checked.
        let m = unsafe { libc::fcntl(src, libc::F_DUPFD_CLOEXEC, above) };
        if m < 0 {
            return Err(io::Error::last_os_error());
        }
        moved[i] = m;
    }
    for (i, &(_, target)) in fds.iter().enumerate() {
        // SAFETY: dup2 onto a number the child reserves for this fd; it clears CLOEXEC.
        if unsafe { libc::dup2(moved[i], target) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

impl DeviceProcess {
    /// Waits for the process on a thread of its own (through its pidfd), reaps it, and
    /// reports its end to the control loop as a failure of `device`: device processes only
    /// end when the VM does, and by then nobody listens.
    pub fn supervise(self, device: String, events: Sender<VmEvent>) -> io::Result<()> {
        std::thread::Builder::new()
            .name(format!("{device}-watch"))
            .spawn(move || {
                let DeviceProcess {
                    pid,
                    mut child,
                    pidfd,
                } = self;
                let mut pfd = libc::pollfd {
                    fd: pidfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: polls one pollfd we own; EINTR is retried.
                while unsafe { libc::poll(&mut pfd, 1, -1) } < 0
                    && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
                {
                }
                let what = match child.wait() {
                    Ok(st) => describe(st),
                    Err(e) => format!("waiting for it failed: {e}"),
                };
                log::debug!("{device} process {pid} ended: {what}");
                let _ = events.send(VmEvent::DeviceFailed {
                    device,
                    what: format!("its process {pid} {what}"),
                });
            })
            .map(|_| ())
    }
}

/// "was killed by signal 9 (SIGKILL)", "exited with status 1".
pub fn describe(st: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s} ({})", signal_name(s)),
        _ => format!("ended ({st})"),
    }
}

fn signal_name(s: i32) -> &'static str {
    match s {
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGSYS => "SIGSYS",
        libc::SIGTERM => "SIGTERM",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGPIPE => "SIGPIPE",
        _ => "another signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn ends_are_described_by_code_and_signal_name() {
        assert_eq!(
            describe(std::process::ExitStatus::from_raw(9)),
            "was killed by signal 9 (SIGKILL)"
        );
        assert_eq!(
            describe(std::process::ExitStatus::from_raw(1 << 8)),
            "exited with status 1"
        );
    }
}
