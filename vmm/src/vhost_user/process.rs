//! Device processes: berth's own binary re-executed with the `device` subcommand (not a fork
//! of the threaded VMM) in namespaces of its own (the sandbox crate's spawn), given only its
//! socket and its resources as inherited fds. It locks itself down before serving and says so
//! on a report pipe; berth then watches it through a pidfd until it ends.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::mpsc::Sender;
use std::time::Duration;

use sandbox::report::{self, Report};

use crate::cli::SeccompMode;
use crate::events::VmEvent;

/// The report pipe's number in a device process.
const REPORT_FD: RawFd = 9;
/// How long a device process may take to set up its jail.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A started, jailed device process.
pub struct DeviceProcess {
    pub pid: i32,
    pidfd: OwnedFd,
    report: File,
}

/// Why a device process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Sandbox(#[from] sandbox::Error),
    #[error("its jail could not be set up: {0}")]
    Jail(String),
    #[error("it {0} while setting up its jail")]
    Died(String),
    #[error("it did not set up its jail within {SETUP_TIMEOUT:?} ({0})")]
    Timeout(String),
}

/// Starts `berth device ARGS` jailed, with `fds` (source here, number there) inherited,
/// and waits until it has locked itself down. PR_SET_PDEATHSIG (the child dies with berth)
/// fires when the thread that started it exits: call this from the main thread, which lives
/// as long as the VM.
pub fn spawn(
    args: &[String],
    fds: &[(RawFd, RawFd)],
    seccomp: SeccompMode,
) -> Result<DeviceProcess, SpawnError> {
    let cstr = |s: &[u8]| CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let mut argv = vec![cstr(b"berth")?, cstr(b"device")?];
    for a in [
        "--jail-report-fd".to_string(),
        REPORT_FD.to_string(),
        "--seccomp".into(),
        seccomp.name().into(),
    ]
    .iter()
    .chain(args)
    {
        argv.push(cstr(a.as_bytes())?);
    }
    let env = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            cstr(&kv)
        })
        .collect::<io::Result<Vec<_>>>()?;
    let null = File::open("/dev/null")?;
    let (rx, tx) = pipe()?;
    // The device's stderr is a pipe berth copies to its own: a jailed device may write no
    // file (RLIMIT_FSIZE), and berth's stderr may be one. Non-blocking on the device's side,
    // so a log line that finds the pipe full is dropped rather than stalling the device.
    let (log_rx, log_tx) = pipe()?;
    set_nonblocking(&log_tx)?;
    let mut all = vec![
        (null.as_raw_fd(), 0),
        (null.as_raw_fd(), 1),
        (log_tx.as_raw_fd(), 2),
        (tx.as_raw_fd(), REPORT_FD),
    ];
    all.extend_from_slice(fds);
    let started = std::time::Instant::now();
    let child = sandbox::spawn::spawn(&sandbox::spawn::Command {
        program: cstr(b"/proc/self/exe")?,
        args: argv,
        env,
        fds: all,
    })?;
    drop((tx, log_tx));
    relay_log(File::from(log_rx))?;
    let mut dp = DeviceProcess {
        pid: child.pid,
        pidfd: child.pidfd,
        report: File::from(rx),
    };
    match dp.first_report() {
        Ok(()) => {
            // Start and jail set-up, up to the device's report (bench/boot.sh reads this).
            log::debug!(
                "device process {} jailed and ready {} us after its start",
                dp.pid,
                started.elapsed().as_micros()
            );
            Ok(dp)
        }
        Err(e) => {
            dp.kill_and_reap();
            Err(e)
        }
    }
}

/// Copies a device's log lines to berth's stderr until the device is gone.
fn relay_log(mut from: File) -> io::Result<()> {
    crate::filters::spawn_helper("device-log".into(), move || {
        let _ = io::copy(&mut from, &mut io::stderr());
    })
    .map(|_| ())
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd we own; the results are checked.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: pipe2 fills two fds; checked.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are new and owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn poll_in(fd: RawFd, timeout: Option<Duration>) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    loop {
        // SAFETY: polls one pollfd on the stack.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r >= 0 {
            return Ok(r > 0);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

impl DeviceProcess {
    /// Waits for READY (or why not) on the report pipe.
    fn first_report(&mut self) -> Result<(), SpawnError> {
        if !poll_in(self.report.as_raw_fd(), Some(SETUP_TIMEOUT))? {
            return Err(SpawnError::Timeout(self.whereabouts()));
        }
        match report::receive(&mut self.report)? {
            Some(Report::Ready) => Ok(()),
            Some(Report::Failed(why)) => Err(SpawnError::Jail(why)),
            Some(Report::Syscall(nr)) => Err(SpawnError::Died(format!(
                "ran into its seccomp filter (system call {nr}, {})",
                sandbox::syscalls::name(i64::from(nr))
            ))),
            None => Err(SpawnError::Died(self.reap())),
        }
    }

    /// Where a stuck process is: whether it exec'd, what it waits in, its system call.
    fn whereabouts(&self) -> String {
        let read = |f: &str| {
            std::fs::read(format!("/proc/{}/{f}", self.pid))
                .map(|b| {
                    String::from_utf8_lossy(&b)
                        .replace('\0', " ")
                        .trim()
                        .to_string()
                })
                .unwrap_or_else(|e| format!("? ({e})"))
        };
        let status = read("status");
        let state = status
            .lines()
            .find(|l| l.starts_with("State:"))
            .unwrap_or("");
        format!(
            "command line {:?}, waiting in {}, system call {}, {state}",
            read("cmdline"),
            read("wchan"),
            read("syscall"),
        )
    }

    /// Waits for the process to end and says how it did.
    fn reap(&self) -> String {
        let mut status = 0;
        // SAFETY: waits for our own child.
        while unsafe { libc::waitpid(self.pid, &mut status, 0) } < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return format!("ended (waiting for it failed: {e})");
            }
        }
        use std::os::unix::process::ExitStatusExt;
        let st = std::process::ExitStatus::from_raw(status);
        if let Some(why) = st.code().and_then(sandbox::spawn::describe_setup_exit) {
            return format!("exited before it ran: {why}");
        }
        describe(st)
    }

    fn kill_and_reap(&self) {
        // SAFETY: signals our own child (through its pidfd, so never another process).
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        self.reap();
    }

    /// Waits for the process on a thread of its own (through its pidfd), reaps it, and
    /// reports its end to the control loop as a failure of `device`: device processes only
    /// end when the VM does, and by then nobody listens. A seccomp violation is named.
    pub fn supervise(self, device: String, events: Sender<VmEvent>) -> io::Result<()> {
        crate::filters::spawn_helper(format!("{device}-watch"), move || {
                let _ = poll_in(self.pidfd.as_raw_fd(), None);
                let how = self.reap();
                let mut report = &self.report;
                let what = match report::receive(&mut report) {
                    Ok(Some(Report::Syscall(nr))) => format!(
                        "its process {} ran into its seccomp filter: system call {nr} ({}) is not in its policy",
                        self.pid,
                        sandbox::syscalls::name(i64::from(nr))
                    ),
                    _ => format!("its process {} {how}", self.pid),
                };
                log::debug!("{device}: {what}");
                let _ = events.send(VmEvent::DeviceFailed { device, what });
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
