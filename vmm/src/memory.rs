//! Guest RAM: one file mapped shared, so that device processes (vhost-user backends, the
//! sandbox) map the same pages. Which file decides the page size the guest runs on:
//!
//! - `thp` (default): an unlinked file on a private `huge=always` tmpfs that the sandbox's
//!   namespace helper mounts. It gets transparent huge pages whatever the host's
//!   `shmem_enabled` says (`never` on Debian), which a memfd does not: under nested paging 4 KiB
//!   pages made boots 1.8x slower. Falls back to a memfd, with a log line, where the mount is
//!   refused (no user namespaces, or AppArmor forbidding mount in them).
//! - `2M`, `1G`: a hugetlbfs memfd from the host's pool of that size, checked before use.
//! - `off`: a memfd, 4 KiB pages.

use std::fs::File;
use std::os::fd::FromRawFd;

use arch::GuestMemory;
use hypervisor::{MemoryRegion, Vm};
use vm_memory::{FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::cli::HugePages;
use crate::error::{Error, Result};

/// What backs guest RAM, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    /// A file on a private huge=always tmpfs (transparent huge pages).
    HugeTmpfs,
    /// A memfd on 4 KiB pages; the reason when huge pages were wanted.
    Memfd(Option<String>),
    /// A hugetlbfs memfd with pages of this many bytes.
    Hugetlb(u64),
}

impl std::fmt::Display for Backing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backing::HugeTmpfs => {
                f.write_str("a private huge=always tmpfs (transparent huge pages)")
            }
            Backing::Memfd(None) => f.write_str("a memfd (4 KiB pages, as --hugepages off asks)"),
            Backing::Memfd(Some(why)) => write!(
                f,
                "a memfd (4 KiB pages: {why}; boots are slower, see docs/benchmarks.md)"
            ),
            Backing::Hugetlb(page) => write!(f, "hugetlbfs {} MiB pages", page >> 20),
        }
    }
}

/// Creates `size` bytes of guest RAM laid out as `ranges` (start, len), backed as `pages`
/// asks. Each region keeps the file and its offset (`GuestRegionMmap::file_offset`) for
/// sharing.
pub fn create(
    size: u64,
    ranges: &[(u64, u64)],
    pages: HugePages,
) -> Result<(GuestMemory, Backing)> {
    let mib = size >> 20;
    let err = |source| Error::GuestMemory { mib, source };
    let (file, backing) = match pages {
        HugePages::Off => (memfd(size, 0).map_err(err)?, Backing::Memfd(None)),
        HugePages::Thp => match sandbox::huge_tmpfs::create(size) {
            Ok(f) => (f, Backing::HugeTmpfs),
            Err(e) => (
                memfd(size, 0).map_err(err)?,
                Backing::Memfd(Some(e.to_string())),
            ),
        },
        HugePages::Size2M | HugePages::Size1G => {
            let page = pages.page_size();
            check_hugetlb_pool(size, ranges, page)?;
            let flag = if page == 1 << 30 {
                libc::MFD_HUGE_1GB
            } else {
                libc::MFD_HUGE_2MB
            };
            (
                memfd(size, libc::MFD_HUGETLB | flag).map_err(err)?,
                Backing::Hugetlb(page),
            )
        }
    };
    let mut offset = 0;
    let mut regions = Vec::with_capacity(ranges.len());
    for &(start, len) in ranges {
        let len_usize = usize::try_from(len).map_err(|_| Error::MemoryTooLarge { mib })?;
        let f = file.try_clone().map_err(err)?;
        regions.push((
            GuestAddress(start),
            len_usize,
            Some(FileOffset::new(f, offset)),
        ));
        offset += len;
    }
    let mem = GuestMemory::from_ranges_with_files(regions)
        .map_err(|e| err(std::io::Error::other(e.to_string())))?;
    Ok((mem, backing))
}

fn memfd(size: u64, flags: libc::c_uint) -> std::io::Result<File> {
    // SAFETY: memfd_create with a valid NUL-terminated name; the result is checked.
    let fd = unsafe { libc::memfd_create(c"berth-guest-ram".as_ptr(), libc::MFD_CLOEXEC | flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just created and is owned by nothing else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size)?;
    Ok(file)
}

/// A hugetlbfs mapping that outgrows the pool faults with SIGBUS in the middle of the guest's
/// life; refuse it up front instead.
fn check_hugetlb_pool(size: u64, ranges: &[(u64, u64)], page: u64) -> Result<()> {
    let kib = page >> 10;
    let flag = if page == 1 << 30 { "1G" } else { "2M" };
    if let Some(&(_, len)) = ranges.iter().find(|(_, len)| len % page != 0) {
        return Err(Error::HugePages(format!(
            "a {} MiB RAM range is not a multiple of {} MiB pages: give --memory in multiples of {} MiB with --hugepages {flag}",
            len >> 20,
            page >> 20,
            page >> 20
        )));
    }
    let dir = format!("/sys/kernel/mm/hugepages/hugepages-{kib}kB");
    let free: u64 = std::fs::read_to_string(format!("{dir}/free_hugepages"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| {
            Error::HugePages(format!(
                "this host has no {} MiB huge pages ({dir} is missing): use --hugepages thp",
                page >> 20
            ))
        })?;
    let need = size.div_ceil(page);
    if free < need {
        return Err(Error::HugePages(format!(
            "--hugepages {flag} needs {need} free {} MiB pages and the host has {free}: reserve them (echo {need} > {dir}/nr_hugepages, as root) or use --hugepages thp",
            page >> 20
        )));
    }
    Ok(())
}

/// Maps every region of `mem` into `vm`.
pub fn register(vm: &dyn Vm, mem: &GuestMemory) -> Result<()> {
    for (slot, region) in mem.iter().enumerate() {
        let host_addr = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|e| Error::Device(format!("guest memory: {e}")))?;
        let r = MemoryRegion {
            slot: slot as u32,
            guest_addr: region.start_addr().0,
            size: region.len(),
            host_addr: host_addr as u64,
            read_only: false,
        };
        // SAFETY: the mapping belongs to `mem`, which the VMM keeps alive (and unchanged) until
        // the process exits, after the VM is gone.
        unsafe { vm.add_memory_region(r) }?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn ranges_share_one_file_at_consecutive_offsets() {
        use std::os::unix::fs::FileExt;
        for pages in [HugePages::Off, HugePages::Thp] {
            let (mem, _) = create(4 << 20, &[(0, 2 << 20), (4 << 30, 2 << 20)], pages).unwrap();
            mem.write_obj(0xabu8, GuestAddress(4 << 30)).unwrap();
            let first = mem.iter().next().unwrap().file_offset().unwrap();
            let second = mem.iter().nth(1).unwrap().file_offset().unwrap();
            assert_eq!((first.start(), second.start()), (0, 2 << 20));
            let mut b = [0u8];
            first.file().read_exact_at(&mut b, 2 << 20).unwrap();
            assert_eq!(b[0], 0xab, "both ranges live in the same file");
            assert_eq!(first.file().metadata().unwrap().len(), 4 << 20);
        }
    }

    #[test]
    fn thp_backing_is_the_huge_tmpfs_here() {
        // User and mount namespaces work on the machines this project builds on.
        let (_, backing) = create(2 << 20, &[(0, 2 << 20)], HugePages::Thp).unwrap();
        assert_eq!(backing, Backing::HugeTmpfs);
    }

    #[test]
    fn hugetlb_refuses_misaligned_ranges_and_an_empty_pool() {
        let e = check_hugetlb_pool(3 << 20, &[(0, 3 << 20)], 2 << 20).unwrap_err();
        assert!(e.to_string().contains("multiples of 2 MiB"), "{e}");
        // No 1 GiB pages are reserved on the build machines.
        let e = check_hugetlb_pool(1 << 40, &[(0, 1 << 40)], 1 << 30).unwrap_err();
        assert!(e.to_string().contains("--hugepages thp"), "{e}");
    }
}
