//! seccomp allow-lists, built with `seccompiler` from lists compiled into the binary (no
//! policy files to find at run time). A call outside the list traps: a SIGSYS handler writes
//! the call's number to a report fd the parent reads, says which call on stderr, and exits.
//! In `Log` mode the kernel logs the call and lets it run (for finding what a workload needs).

use std::collections::BTreeMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};

pub use seccompiler::BpfProgram;
use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
};

use crate::{syscalls, Error, Result};

/// What a filter does with calls outside its list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// SIGSYS: reported and fatal.
    Trap,
    /// Logged by the kernel (dmesg / audit), then allowed.
    Log,
}

/// Exit status of a process its filter stopped (128 + SIGSYS, as a shell would show it).
pub const EXIT_SECCOMP: i32 = 128 + libc::SIGSYS;

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

/// One entry of an allow-list: a system call, or a system call with this first argument
/// (e.g. prctl(PR_SET_NAME) but no other prctl).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allow {
    Call(i64),
    CallWithArg0(i64, u64),
    /// A system call with this second argument (e.g. fcntl(fd, F_GETFD) but no other fcntl).
    CallWithArg1(i64, u64),
    /// ioctl(2) with this request (its second argument), on any fd.
    Ioctl(u64),
}

/// Compiles an allow-list.
pub fn filter(allowed: &[Allow], mode: Mode) -> Result<BpfProgram> {
    let err = |e: seccompiler::BackendError| Error::Seccomp(e.to_string());
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for a in allowed {
        let (nr, index, value) = match *a {
            // An empty rule list allows the call whatever its arguments; it wins over rules.
            Allow::Call(nr) => {
                rules.insert(nr, Vec::new());
                continue;
            }
            Allow::CallWithArg0(nr, arg0) => (nr, 0, arg0),
            Allow::CallWithArg1(nr, arg1) => (nr, 1, arg1),
            Allow::Ioctl(request) => (libc::SYS_ioctl, 1, request),
        };
        // 32 bits: the kernel reads an ioctl request, and prctl's option, as an int.
        let cond = SeccompCondition::new(index, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
            .map_err(err)?;
        let rule = SeccompRule::new(vec![cond]).map_err(err)?;
        match rules.get_mut(&nr) {
            Some(v) if v.is_empty() => {}
            Some(v) => v.push(rule),
            None => {
                rules.insert(nr, vec![rule]);
            }
        }
    }
    let mismatch = match mode {
        Mode::Trap => SeccompAction::Trap,
        Mode::Log => SeccompAction::Log,
    };
    let f = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, ARCH)
        .map_err(|e| Error::Seccomp(e.to_string()))?;
    BpfProgram::try_from(f).map_err(|e| Error::Seccomp(e.to_string()))
}

/// Where the SIGSYS handler reports (-1: nowhere but stderr).
static REPORT_FD: AtomicI32 = AtomicI32::new(-1);
/// The stderr line's prefix ("berth[NAME]" for a device, "berth"), set once before the filter.
static NAME: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
/// How the stderr line ends, after the call's name.
static ENDING: std::sync::OnceLock<&'static [u8]> = std::sync::OnceLock::new();
/// Called by the handler just before the process exits (e.g. to restore a terminal): it must
/// be async-signal-safe and make only calls every filter of the process allows.
static BEFORE_EXIT: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

std::thread_local! {
    /// The calling thread's filter, named for the stderr line ("" when it has none of its
    /// own). Const-initialised and without a destructor: reading it in a signal handler is a
    /// plain thread-local load.
    static THREAD_FILTER: std::cell::Cell<&'static str> = const { std::cell::Cell::new("") };
}

/// Installs the SIGSYS handler of a device process: `name` for its stderr line, `report` an
/// fd that gets the call's number ([`crate::report::Report::Syscall`]) before it exits.
pub fn install_reporter(name: &str, report: Option<RawFd>) -> Result<()> {
    install_reporter_with(
        &format!("berth[{name}]"),
        report,
        b"is not in this device's policy; the device stops\n",
        None,
    )
}

/// Installs the SIGSYS handler with its stderr line's prefix and end, and a last step before
/// the process exits.
pub fn install_reporter_with(
    prefix: &str,
    report: Option<RawFd>,
    ending: &'static [u8],
    before_exit: Option<fn()>,
) -> Result<()> {
    let _ = NAME.set(prefix.as_bytes().to_vec());
    let _ = ENDING.set(ending);
    if let Some(f) = before_exit {
        let _ = BEFORE_EXIT.set(f);
    }
    REPORT_FD.store(report.unwrap_or(-1), Ordering::Relaxed);
    // SAFETY: a sigaction with an async-signal-safe handler (on_sigsys makes only write(2)
    // and _exit(2) calls on static data and its stack).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigsys as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut()) != 0 {
            return Err(Error::Seccomp(format!(
                "installing the SIGSYS handler: {}",
                std::io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}

extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // siginfo's SIGSYS fields: _call_addr (a pointer) at 16, _syscall (an int) at 24, on
    // every 64-bit Linux.
    // SAFETY: the kernel passed a valid siginfo for SIGSYS.
    let nr = unsafe { *(info as *const u8).add(24).cast::<i32>() };
    let mut line = [0u8; 160];
    let mut n = 0;
    let mut put = |b: &[u8]| {
        let k = b.len().min(line.len() - n);
        line[n..n + k].copy_from_slice(&b[..k]);
        n += k;
    };
    put(NAME.get().map(Vec::as_slice).unwrap_or(b"berth"));
    put(b": error: seccomp: system call ");
    let mut digits = [0u8; 12];
    let mut d = digits.len();
    let mut v = nr.unsigned_abs();
    loop {
        d -= 1;
        digits[d] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    put(&digits[d..]);
    put(b" (");
    put(syscalls::name(i64::from(nr)).as_bytes());
    put(b") ");
    let thread = THREAD_FILTER.with(|t| t.get());
    if !thread.is_empty() {
        put(b"by a thread under the ");
        put(thread.as_bytes());
        put(b" filter ");
    }
    put(ENDING.get().copied().unwrap_or(b"is not allowed\n"));
    // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffers live on this stack.
    unsafe {
        libc::write(2, line.as_ptr().cast(), n);
        if let Some(f) = BEFORE_EXIT.get() {
            f();
        }
        let fd = REPORT_FD.load(Ordering::Relaxed);
        if fd >= 0 {
            crate::report::send_syscall_raw(fd, nr);
        }
        libc::_exit(EXIT_SECCOMP);
    }
}

/// Applies `prog` to every thread of the process (TSYNC).
pub fn apply_all_threads(prog: &BpfProgram) -> Result<()> {
    seccompiler::apply_filter_all_threads(prog).map_err(|e| Error::Seccomp(e.to_string()))
}

/// Applies `prog` to the calling thread only (and the threads it starts later).
pub fn apply_this_thread(prog: &BpfProgram) -> Result<()> {
    seccompiler::apply_filter(prog).map_err(|e| Error::Seccomp(e.to_string()))
}

/// Applies `prog` to the calling thread, named `filter` in a violation's report.
pub fn apply_this_thread_named(prog: &BpfProgram, filter: &'static str) -> Result<()> {
    apply_this_thread(prog)?;
    THREAD_FILTER.with(|t| t.set(filter));
    Ok(())
}
