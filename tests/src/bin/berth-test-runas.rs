//! `berth-test-runas UID GID PROGRAM [ARGS...]`: runs PROGRAM as UID and GID with no
//! supplementary groups (what util-linux `setpriv --reuid --regid --clear-groups` does; the
//! emulated host's busybox setpriv cannot). The harness's `GuestRun::as_user` uses it.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

fn main() {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let id = |i: usize| -> u32 {
        args.get(i)
            .and_then(|a| a.to_str()?.parse().ok())
            .unwrap_or_else(|| {
                eprintln!("usage: berth-test-runas UID GID PROGRAM [ARGS...]");
                std::process::exit(2)
            })
    };
    let (uid, gid) = (id(0), id(1));
    let argv: Vec<CString> = args[2..]
        .iter()
        .map(|a| CString::new(a.as_bytes()).expect("no NUL in arguments"))
        .collect();
    if argv.is_empty() {
        eprintln!("usage: berth-test-runas UID GID PROGRAM [ARGS...]");
        std::process::exit(2);
    }
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: setgroups with no groups, setresgid/setresuid with integers, execvp with a
    // NUL-terminated argv of live CStrings.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setresgid(gid, gid, gid) != 0
            || libc::setresuid(uid, uid, uid) != 0
        {
            eprintln!(
                "berth-test-runas: cannot become {uid}:{gid}: {}",
                std::io::Error::last_os_error()
            );
            std::process::exit(1);
        }
        libc::execvp(ptrs[0], ptrs.as_ptr());
    }
    eprintln!(
        "berth-test-runas: exec {:?}: {}",
        args[2],
        std::io::Error::last_os_error()
    );
    std::process::exit(127);
}
