//! Anonymous host memory for a kit guest.

use std::ptr::NonNull;

use super::{step, Outcome};
use crate::{MemoryRegion, Vm};

/// A private anonymous mapping, unmapped on drop. The kit hands it to the hypervisor, so it
/// must outlive the VM: keep it in the same struct, declared after the VM (dropped later).
pub struct GuestRam {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; access goes through &self/&mut self
// (the guest's own accesses are the hypervisor's business).
unsafe impl Send for GuestRam {}

impl GuestRam {
    /// Maps `len` zeroed bytes (a multiple of the page size).
    pub fn new(len: usize) -> std::io::Result<Self> {
        // SAFETY: a fresh anonymous private mapping; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(GuestRam {
            ptr: NonNull::new(p.cast()).expect("mmap returned NULL without failing"),
            len,
        })
    }

    pub fn host_addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// Copies `data` to offset `at`. Panics if it does not fit (the kit's own layout bug).
    pub fn write(&mut self, at: u64, data: &[u8]) {
        let at = at as usize;
        assert!(at + data.len() <= self.len, "kit guest layout out of RAM");
        // SAFETY: in bounds (checked), and the mapping is ours and writable.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(at), data.len())
        }
    }

    /// Copies `len` bytes from offset `at`.
    pub fn read(&self, at: u64, len: usize) -> Vec<u8> {
        let at = at as usize;
        assert!(at + len <= self.len, "kit guest layout out of RAM");
        let mut v = vec![0; len];
        // SAFETY: in bounds (checked); the guest may write concurrently only while a vCPU
        // runs, and the kit reads after its vCPUs stopped.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(at), v.as_mut_ptr(), len) }
        v
    }
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `new` with this length and is not used after drop.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Maps `size` more bytes at `at` into `vm` as `slot` (read-only if asked), starting with
/// `init`; the memory goes to `slots`, which the caller keeps until the VM is gone.
pub fn add_slot(
    vm: &dyn Vm,
    slots: &mut Vec<GuestRam>,
    slot: u32,
    at: u64,
    size: usize,
    read_only: bool,
    init: &[u8],
) -> Result<MemoryRegion, Outcome> {
    let mut mem = step("map the slot's memory", GuestRam::new(size))?;
    mem.write(0, init);
    let region = MemoryRegion {
        slot,
        guest_addr: at,
        size: size as u64,
        host_addr: mem.host_addr(),
        read_only,
    };
    slots.push(mem);
    // SAFETY: the mapping is in `slots`, which the caller drops after the VM and its vCPUs.
    step("add a memory slot", unsafe { vm.add_memory_region(region) })?;
    Ok(region)
}
