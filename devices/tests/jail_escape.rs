//! Escape attempts from inside the real jail: started by the sandbox's spawn (new user, mount,
//! pid, net, ipc, uts and cgroup namespaces, an unprivileged uid), locked down by its lockdown
//! (empty read-only root, only its own fds, no capabilities, no_new_privs, Landlock) and, in
//! the second round, filtered by a device's real seccomp policy (virtio-rng's). Each attempt
//! runs in a fresh jail of its own (this test binary, re-executed). Without seccomp every
//! attempt must fail on the other layers alone; with it, each is stopped by the filter and
//! reported by name, as is a harmless call that only the filter forbids.
//!
//! Runs natively (no KVM needed): it is part of every `cargo test`.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use devices::virtio::backend::{VirtioBackend, FRAMEWORK_SYSCALLS};
use devices::virtio::rng::Rng;
use sandbox::report::{self, Report};

const THIS_TEST: &str = "escape_attempts_fail_inside_the_jail";
const REPORT_FD: i32 = 9;

/// The attempts, by name; each prints "errno N" when its call fails and "ok" when it works.
const ATTEMPTS: &[&str] = &[
    "open-etc-passwd",
    "execve-sh",
    "socket-inet-connect",
    "ptrace-parent",
    "mount-tmpfs",
    "read-parent-memory",
    "only-the-filter-forbids",
];

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// One attempt, inside the jail; returns what it got.
fn attempt(name: &str) -> String {
    let res = |r: i64| {
        if r < 0 {
            format!("errno {}", errno())
        } else {
            "ok".to_string()
        }
    };
    // SAFETY: each call gets valid pointers to NUL-terminated strings or plain structs.
    unsafe {
        match name {
            "open-etc-passwd" => res(libc::open(c"/etc/passwd".as_ptr(), libc::O_RDONLY) as i64),
            "execve-sh" => {
                let argv = [c"sh".as_ptr(), std::ptr::null()];
                let envp = [std::ptr::null()];
                res(libc::execve(c"/bin/sh".as_ptr(), argv.as_ptr(), envp.as_ptr()) as i64)
            }
            "socket-inet-connect" => {
                let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                if s < 0 {
                    return res(-1);
                }
                let addr = libc::sockaddr_in {
                    sin_family: libc::AF_INET as u16,
                    sin_port: 80u16.to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_be_bytes([192, 0, 2, 1]).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                res(libc::connect(
                    s,
                    (&addr as *const libc::sockaddr_in).cast(),
                    std::mem::size_of_val(&addr) as u32,
                ) as i64)
            }
            // The process that started the jail: known to it as the parent of pid 1 (0 in
            // its own pid namespace), so take the real number from the environment.
            "ptrace-parent" => {
                let ppid: i32 = std::env::var("BERTH_JAIL_PARENT")
                    .ok()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(1);
                res(libc::ptrace(libc::PTRACE_ATTACH, ppid, 0, 0))
            }
            "mount-tmpfs" => res(libc::mount(
                c"x".as_ptr(),
                c"/".as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            ) as i64),
            "read-parent-memory" => {
                let path = format!(
                    "/proc/{}/mem",
                    std::env::var("BERTH_JAIL_PARENT").unwrap_or_default()
                );
                let p = CString::new(path).unwrap();
                res(libc::open(p.as_ptr(), libc::O_RDONLY) as i64)
            }
            // Allowed by every other layer; not in any device policy.
            "only-the-filter-forbids" => res(libc::syscall(libc::SYS_getppid)),
            _ => "unknown attempt".into(),
        }
    }
}

/// Inside the jail: lock down, filter if asked, try, print, exit.
fn child(name: &str, filtered: bool) -> ! {
    let limits = sandbox::lockdown::Limits {
        keep_fds: vec![0, 1, 2, REPORT_FD],
        nofile: 32,
        fsize: Some(0),
        data: 256 << 20,
    };
    if let Err(e) = sandbox::lockdown::enter(&limits) {
        println!("lockdown failed: {e}");
        std::process::exit(2);
    }
    if filtered {
        let mut allowed = FRAMEWORK_SYSCALLS.to_vec();
        allowed.extend_from_slice(Rng::new().syscalls());
        let prog = sandbox::seccomp::filter(&allowed, sandbox::seccomp::Mode::Trap).unwrap();
        sandbox::seccomp::install_reporter("jail-test", Some(REPORT_FD)).unwrap();
        sandbox::seccomp::apply_all_threads(&prog).unwrap();
    }
    let got = attempt(name);
    // On a line of its own: libtest has written "test ... " without a newline.
    println!("\n{name}: {got}");
    // SAFETY: ends the process at once (exit_group), past libtest's own clean-up.
    unsafe { libc::_exit(0) }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [-1; 2];
    // SAFETY: pipe2 fills two fds.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: new fds owned by nothing else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Runs `name` in a fresh jail; returns (its output, its report, its wait status).
fn run(name: &str, filtered: bool) -> (String, Option<Report>, i32) {
    let exe = std::env::current_exe().unwrap();
    let exe = CString::new(exe.as_os_str().as_encoded_bytes()).unwrap();
    let args = [
        "jail-test",
        "--exact",
        THIS_TEST,
        "--nocapture",
        "--test-threads=1",
    ]
    .map(|a| CString::new(a).unwrap())
    .to_vec();
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let env = vec![
        CString::new(format!("BERTH_JAIL_ATTEMPT={name}")).unwrap(),
        CString::new(format!("BERTH_JAIL_FILTERED={}", u8::from(filtered))).unwrap(),
        CString::new(format!("BERTH_JAIL_PARENT={me}")).unwrap(),
    ];
    let (out_r, out_w) = pipe();
    let (rep_r, rep_w) = pipe();
    let child = sandbox::spawn::spawn(&sandbox::spawn::Command {
        program: exe,
        args,
        env,
        fds: vec![
            (out_w.as_raw_fd(), 1),
            (libc::STDERR_FILENO, 2),
            (rep_w.as_raw_fd(), REPORT_FD),
        ],
    })
    .expect("the jail starts on this machine (user namespaces work here)");
    drop((out_w, rep_w));
    let mut out = String::new();
    std::fs::File::from(out_r).read_to_string(&mut out).unwrap();
    let mut rep = std::fs::File::from(rep_r);
    let report = report::receive(&mut rep).unwrap();
    let mut status = 0;
    // SAFETY: reaps our own child.
    unsafe { libc::waitpid(child.pid, &mut status, 0) };
    (out, report, status)
}

#[test]
fn escape_attempts_fail_inside_the_jail() {
    if let Ok(name) = std::env::var("BERTH_JAIL_ATTEMPT") {
        child(
            &name,
            std::env::var("BERTH_JAIL_FILTERED").as_deref() == Ok("1"),
        );
    }
    if std::env::var_os("BERTH_UNDER_QEMU_USER").is_some() {
        eprintln!("skipped: qemu-user cannot emulate clone(2) with namespace flags");
        return;
    }
    // Round 1: namespaces, empty root, no capabilities, Landlock, no seccomp.
    for &a in ATTEMPTS {
        let (out, _, _) = run(a, false);
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{a}: ")))
            .unwrap_or_else(|| panic!("{a}: no result in {out:?}"));
        eprintln!("without seccomp: {line}");
        let expect_fail = a != "only-the-filter-forbids";
        assert_eq!(
            line.contains("errno"),
            expect_fail,
            "without seccomp, {line} (the other layers must stop every escape, and allow the harmless call)"
        );
    }
    // Round 2: with virtio-rng's seccomp policy every attempt is stopped by the filter,
    // which kills the process and names the call.
    let expected = [
        ("open-etc-passwd", libc::SYS_openat),
        ("execve-sh", libc::SYS_execve),
        ("socket-inet-connect", libc::SYS_socket),
        ("ptrace-parent", libc::SYS_ptrace),
        ("mount-tmpfs", libc::SYS_mount),
        ("read-parent-memory", libc::SYS_openat),
        ("only-the-filter-forbids", libc::SYS_getppid),
    ];
    for (a, nr) in expected {
        let (out, report, status) = run(a, true);
        assert_eq!(
            report,
            Some(Report::Syscall(nr as i32)),
            "{a}: the filter's report (output {out:?})"
        );
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == sandbox::seccomp::EXIT_SECCOMP,
            "{a}: status {status:#x}"
        );
        assert!(
            !out.contains(&format!("{a}: ")),
            "{a} went on after the filter: {out}"
        );
        assert_eq!(
            sandbox::syscalls::name(nr),
            match a {
                "open-etc-passwd" | "read-parent-memory" => "openat",
                "execve-sh" => "execve",
                "socket-inet-connect" => "socket",
                "ptrace-parent" => "ptrace",
                "mount-tmpfs" => "mount",
                _ => "getppid",
            }
        );
    }
}
