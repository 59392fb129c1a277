//! A file for guest RAM on a private tmpfs mounted with `huge=always`, so that a shared
//! mapping of it gets transparent huge pages whatever the host's `shmem_enabled` says (Debian's
//! default, `never`, leaves a memfd on 4 KiB pages). The tmpfs is mounted by the namespace
//! helper in a mount namespace of its own: no host setting changes, no privilege is needed,
//! and the unlinked file (O_TMPFILE) is reachable only through the returned fd, which can be
//! shared with device processes like a memfd.

use std::ffi::CString;
use std::fs::File;

use crate::{ns_helper, Error, Result};

const STEPS: &[&str] = &[
    "mounting a tmpfs with huge=always",
    "creating the file (O_TMPFILE)",
    "sizing the file",
];

/// Huge page size of the tmpfs; the mount is rounded up to it.
const HUGE: u64 = 2 << 20;

/// Creates an unlinked `size`-byte file on a fresh `huge=always` tmpfs.
pub fn create(size: u64) -> Result<File> {
    let opts = CString::new(format!(
        "huge=always,size={},nr_inodes=16,mode=0700",
        size.div_ceil(HUGE) * HUGE
    ))
    .map_err(|_| Error::Nul("tmpfs options"))?;
    let len = size as libc::off_t;
    // Any directory will do as the mount point: the mount lives in the helper's namespace.
    let dir = ["/tmp", "/dev/shm", "/mnt", "/run", "/var/tmp"]
        .into_iter()
        .find(|d| std::path::Path::new(d).is_dir())
        .unwrap_or("/tmp");
    let dir = CString::new(dir).map_err(|_| Error::Nul("mount point"))?;
    let fd = ns_helper::run(STEPS, move || {
        // SAFETY: system calls on literals and `opts`, prepared before the fork.
        unsafe {
            let errno = || *libc::__errno_location();
            if libc::mount(
                c"berth-ram".as_ptr(),
                dir.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                opts.as_ptr().cast(),
            ) != 0
            {
                return Err((0, errno()));
            }
            let fd = libc::open(
                dir.as_ptr(),
                libc::O_TMPFILE | libc::O_EXCL | libc::O_RDWR | libc::O_CLOEXEC,
                0o600,
            );
            if fd < 0 {
                return Err((1, errno()));
            }
            if libc::ftruncate(fd, len) != 0 {
                return Err((2, errno()));
            }
            Ok(fd)
        }
    })?;
    Ok(File::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// What /proc/self/smaps says of the mapping that starts at `addr`.
    fn smaps_field(addr: usize, field: &str) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let start = format!("{addr:x}-");
        let mut inside = false;
        for line in smaps.lines() {
            if line.chars().next().is_some_and(|c| c.is_ascii_hexdigit()) && line.contains('-') {
                inside = line.starts_with(&start);
            } else if inside && line.starts_with(field) {
                return line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
            }
        }
        panic!("no mapping at {addr:#x} in smaps");
    }

    #[test]
    fn a_shared_mapping_gets_huge_pages() {
        let size = 8u64 << 20;
        let f = create(size).expect("user and mount namespaces work on this machine");
        assert_eq!(f.metadata().unwrap().len(), size);
        // SAFETY: maps the whole file shared; unmapped below before `f` is dropped.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        // SAFETY: p is a writable mapping of `size` bytes.
        unsafe { std::ptr::write_bytes(p.cast::<u8>(), 1, size as usize) };
        let pmd = smaps_field(p as usize, "ShmemPmdMapped:");
        // SAFETY: unmaps what was mapped above.
        unsafe { libc::munmap(p, size as usize) };
        assert!(pmd >= 4096, "only {pmd} kB of 8 MiB mapped with huge pages");
    }
}
