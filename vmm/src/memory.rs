//! Guest RAM backed by one memfd, mapped shared, so that device processes (the sandbox) can map
//! the same pages.

use std::fs::File;
use std::os::fd::FromRawFd;

use arch::GuestMemory;
use hypervisor::{MemoryRegion, Vm};
use vm_memory::{FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::error::{Error, Result};

/// Creates `size` bytes of guest RAM laid out as `ranges` (start, len). Each region keeps the
/// memfd and its offset (`GuestRegionMmap::file_offset`) for sharing.
pub fn create(size: u64, ranges: &[(u64, u64)]) -> Result<GuestMemory> {
    let mib = size >> 20;
    let err = |source| Error::GuestMemory { mib, source };
    // SAFETY: memfd_create with a valid NUL-terminated name; the result is checked.
    let fd = unsafe { libc::memfd_create(c"berth-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    // SAFETY: fd was just created and is owned by nothing else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size).map_err(err)?;
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
    GuestMemory::from_ranges_with_files(regions)
        .map_err(|e| err(std::io::Error::other(e.to_string())))
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
    fn ranges_share_one_memfd_at_consecutive_offsets() {
        use std::os::unix::fs::FileExt;
        let mem = create(3 << 20, &[(0, 2 << 20), (4 << 30, 1 << 20)]).unwrap();
        mem.write_obj(0xabu8, GuestAddress(4 << 30)).unwrap();
        let first = mem.iter().next().unwrap().file_offset().unwrap();
        let second = mem.iter().nth(1).unwrap().file_offset().unwrap();
        assert_eq!((first.start(), second.start()), (0, 2 << 20));
        let mut b = [0u8];
        first.file().read_exact_at(&mut b, 2 << 20).unwrap();
        assert_eq!(b[0], 0xab, "both ranges live in the same memfd");
        assert_eq!(first.file().metadata().unwrap().len(), 3 << 20);
    }
}
