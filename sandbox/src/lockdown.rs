//! The jail a process puts itself in, after [`crate::spawn`] started it in namespaces of its
//! own and before it touches anything untrusted: an empty read-only root, only its own fds,
//! resource limits, no capabilities, no new privileges, Landlock where the kernel has it. The
//! seccomp filter comes last ([`crate::seccomp`]), once the process's threads exist.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;

use crate::{Error, Result};

/// What the process keeps and may use.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Fds to keep (0, 1 and 2 included if wanted); every other is closed.
    pub keep_fds: Vec<RawFd>,
    /// RLIMIT_NOFILE: the most fds it may have open at once.
    pub nofile: u64,
    /// RLIMIT_FSIZE: the largest offset the process may write a file at (0: no file
    /// writes at all, e.g. a device whose only output is a socket); `None`: unlimited (an
    /// output that may be a growing file).
    pub fsize: Option<u64>,
    /// RLIMIT_DATA in bytes: heap and private mappings (thread stacks included; the shared
    /// guest RAM mapping does not count).
    pub data: u64,
}

fn step(step: &'static str) -> impl Fn(io::Error) -> Error {
    move |source| Error::Helper { step, source }
}

fn check(r: libc::c_int, what: &'static str) -> Result<()> {
    if r < 0 {
        Err(step(what)(io::Error::last_os_error()))
    } else {
        Ok(())
    }
}

/// Swaps the root for an empty read-only tmpfs: the old root is detached (or, on an
/// initramfs root, covered), so no path of the host can be named any more. Needs CAP_SYS_ADMIN in the process's user namespace (what
/// [`crate::spawn`] gives).
pub fn empty_root() -> Result<()> {
    let c = |s: &str| CString::new(s).expect("no NUL");
    // Any existing directory will do as the mount point: the mount lives in our namespace.
    let dir = ["/tmp", "/mnt", "/run", "/dev"]
        .into_iter()
        .find(|d| std::path::Path::new(d).is_dir())
        .ok_or_else(|| step("finding a mount point")(io::ErrorKind::NotFound.into()))?;
    let dir = c(dir);
    // SAFETY: mount, chdir, mkdir, pivot_root, umount2 and rmdir on NUL-terminated paths.
    unsafe {
        check(
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ),
            "making mounts private",
        )?;
        check(
            libc::mount(
                c"berth-jail".as_ptr(),
                dir.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                c"size=16k,nr_inodes=8,mode=0755".as_ptr().cast(),
            ),
            "mounting the jail's tmpfs root",
        )?;
        check(libc::chdir(dir.as_ptr()), "entering the new root")?;
        check(
            libc::mkdir(c"old".as_ptr(), 0o700),
            "making room for the old root",
        )?;
        let pivoted = libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c"old".as_ptr());
        if pivoted == 0 {
            check(libc::chdir(c"/".as_ptr()), "entering the new root")?;
            check(
                libc::umount2(c"/old".as_ptr(), libc::MNT_DETACH),
                "detaching the old root",
            )?;
        } else if *libc::__errno_location() == libc::EINVAL {
            // The root is the initramfs (rootfs), which cannot be pivoted away from: move
            // the tmpfs over it and chroot there, as switch_root does. The old root is then
            // covered, and a process without CAP_SYS_CHROOT cannot climb out.
            check(
                libc::mount(
                    dir.as_ptr(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_MOVE,
                    std::ptr::null(),
                ),
                "moving the jail's root over the initramfs",
            )?;
            check(libc::chroot(c".".as_ptr()), "chroot")?;
            check(libc::chdir(c"/".as_ptr()), "entering the new root")?;
        } else {
            return Err(step("pivot_root")(io::Error::last_os_error()));
        }
        check(
            libc::rmdir(c"/old".as_ptr()),
            "removing the old root's mount point",
        )?;
        check(
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REMOUNT
                    | libc::MS_BIND
                    | libc::MS_RDONLY
                    | libc::MS_NOSUID
                    | libc::MS_NODEV
                    | libc::MS_NOEXEC,
                std::ptr::null(),
            ),
            "making the new root read-only",
        )?;
    }
    Ok(())
}

/// Closes every fd but `keep`.
pub fn close_other_fds(keep: &[RawFd]) -> Result<()> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter(|&&f| f >= 0)
        .map(|&f| f as u32)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut from = 0u32;
    for &k in keep.iter().chain(std::iter::once(&u32::MAX)) {
        if k > from {
            // SAFETY: close_range closes fds in [from, k - 1]; none of them is in use by
            // safe Rust objects the caller keeps (the caller lists those in `keep`).
            let r = unsafe { libc::syscall(libc::SYS_close_range, from, k - 1, 0) };
            check(r as libc::c_int, "closing inherited fds")?;
        }
        if k == u32::MAX {
            break;
        }
        from = k + 1;
    }
    Ok(())
}

fn setrlimit(resource: libc::__rlimit_resource_t, value: u64, what: &'static str) -> Result<()> {
    let lim = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: setrlimit reads one rlimit struct.
    check(unsafe { libc::setrlimit(resource, &lim) }, what)
}

/// The resource limits of `limits` (RLIMIT_NPROC comes later, once threads exist).
pub fn rlimits(limits: &Limits) -> Result<()> {
    setrlimit(libc::RLIMIT_NOFILE, limits.nofile, "RLIMIT_NOFILE")?;
    setrlimit(libc::RLIMIT_CORE, 0, "RLIMIT_CORE")?;
    setrlimit(libc::RLIMIT_DATA, limits.data, "RLIMIT_DATA")?;
    if let Some(max) = limits.fsize {
        setrlimit(libc::RLIMIT_FSIZE, max, "RLIMIT_FSIZE")?;
    }
    Ok(())
}

/// At most `n` threads (the process's main thread included): RLIMIT_NPROC, which counts
/// tasks per user, and every jail has a user namespace of its own. Set before the threads the
/// process needs are started, with room for exactly them.
pub fn limit_threads(n: u64) -> Result<()> {
    setrlimit(libc::RLIMIT_NPROC, n, "RLIMIT_NPROC")
}

/// Drops every capability: bounding set, ambient, effective, permitted and inheritable.
pub fn drop_capabilities() -> Result<()> {
    // SAFETY: prctl with integer arguments; capset with a header and two data structs.
    unsafe {
        let mut cap = 0;
        // PR_CAPBSET_DROP fails with EINVAL past the last capability this kernel knows.
        while libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) >= 0 {
            check(
                libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0),
                "dropping the capability bounding set",
            )?;
            cap += 1;
        }
        check(
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            ),
            "clearing ambient capabilities",
        )?;
        #[repr(C)]
        struct Header {
            version: u32,
            pid: libc::c_int,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const VERSION_3: u32 = 0x2008_0522;
        let mut h = Header {
            version: VERSION_3,
            pid: 0,
        };
        let d = [Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        check(
            libc::syscall(libc::SYS_capset, &mut h as *mut Header, d.as_ptr()) as libc::c_int,
            "capset",
        )?;
    }
    Ok(())
}

/// Sets no_new_privs: nothing this process execs can gain privileges.
pub fn no_new_privs() -> Result<()> {
    // SAFETY: prctl with integer arguments.
    check(
        unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) },
        "PR_SET_NO_NEW_PRIVS",
    )
}

/// Landlock, where the kernel has it: no file system access at all for this thread and the
/// threads it starts. Returns whether it took effect (an old kernel is not an error).
pub fn landlock_no_files() -> Result<bool> {
    use landlock::{Access, AccessFs, Ruleset, RulesetAttr, RulesetStatus, ABI};
    let abi = ABI::V3;
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.create())
        .and_then(|r| r.restrict_self())
        .map_err(|e| step("Landlock")(io::Error::other(e.to_string())))?;
    Ok(status.ruleset != RulesetStatus::NotEnforced)
}

/// Everything above but seccomp and RLIMIT_NPROC, in the order it must happen.
pub fn enter(limits: &Limits) -> Result<bool> {
    empty_root()?;
    close_other_fds(&limits.keep_fds)?;
    rlimits(limits)?;
    let landlocked = landlock_no_files()?;
    drop_capabilities()?;
    no_new_privs()?;
    Ok(landlocked)
}
