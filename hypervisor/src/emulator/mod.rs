//! An x86 instruction emulator for MMIO, shared by the backends whose hypervisor does not
//! decode the access (MSHV reports only the faulting guest physical address): fetch the
//! instruction at RIP through the guest's page tables, decode it with iced-x86, and carry it
//! out against the registers, guest RAM and the VMM's [`IoHandler`].
//!
//! It covers what guest kernels do to devices: MOV in all its forms (register, immediate,
//! moffs), MOVZX, MOVSX/MOVSXD, MOVS, STOS, LODS, and INS/OUTS for a hypervisor that hands
//! string port I/O over undecoded (one iteration per call, with REP: RIP
//! stays on the instruction until the count runs out, as a CPU interrupted between
//! iterations leaves it), and the read-modify-write and compare forms of ADD, SUB, AND, OR,
//! XOR, CMP and TEST, with their flags. Anything else is [`EmulatorError::Unsupported`]; no
//! input makes it panic (`fuzz/` has a target for it).
//!
//! The KVM backend can re-decode each of its MMIO exits with it and compare (see
//! `kvm/mmio_check.rs`), which is how it is proven against a real decoder.

mod exec;
mod paging;
pub(crate) mod regs;
#[cfg(test)]
mod tests;

use thiserror::Error;

pub use crate::x86_64::{Regs, Sregs};
use crate::IoHandler;

/// The registers an instruction may read and write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuState {
    pub regs: Regs,
    pub sregs: Sregs,
}

/// Guest RAM, by guest physical address. An access that is not wholly in RAM is the
/// device's: the emulator sends it to the [`IoHandler`].
pub trait GuestRam {
    /// Fills `data` from `gpa`; `false` if that range is not RAM.
    fn read(&self, gpa: u64, data: &mut [u8]) -> bool;
    /// Writes `data` at `gpa`; `false` if that range is not RAM.
    fn write(&self, gpa: u64, data: &[u8]) -> bool;
}

/// Guest RAM as a VM's memory regions map it (what a backend's emulator path reads). With
/// `writable` false, writes to RAM are dropped (a check that must not change the guest); a
/// read-only region is never written.
pub struct RegionRam<'a> {
    regions: &'a [crate::MemoryRegion],
    writable: bool,
}

impl<'a> RegionRam<'a> {
    /// # Safety
    /// Every region's host range (`host_addr`, `size` bytes) must stay mapped, readable and,
    /// unless the region is read-only or `writable` is false, writable, for as long as the
    /// returned value is used: it reads and writes there.
    pub unsafe fn new(regions: &'a [crate::MemoryRegion], writable: bool) -> Self {
        RegionRam { regions, writable }
    }
}

impl RegionRam<'_> {
    fn host(&self, gpa: u64, len: usize) -> Option<(*mut u8, bool)> {
        let end = gpa.checked_add(len as u64)?;
        let r = self
            .regions
            .iter()
            .find(|r| gpa >= r.guest_addr && end <= r.guest_addr.saturating_add(r.size))?;
        Some(((r.host_addr + (gpa - r.guest_addr)) as *mut u8, r.read_only))
    }
}

impl GuestRam for RegionRam<'_> {
    fn read(&self, gpa: u64, data: &mut [u8]) -> bool {
        let Some((src, _)) = self.host(gpa, data.len()) else {
            return false;
        };
        for (i, b) in data.iter_mut().enumerate() {
            // SAFETY: the range lies in a region's host mapping, which `new`'s caller keeps
            // mapped. Volatile byte reads: other vCPUs may be writing the same memory.
            *b = unsafe { std::ptr::read_volatile(src.add(i)) };
        }
        true
    }

    fn write(&self, gpa: u64, data: &[u8]) -> bool {
        let Some((dst, read_only)) = self.host(gpa, data.len()) else {
            return false;
        };
        // A write to a read-only region is the device's (as the hypervisor treats it).
        if read_only {
            return false;
        }
        if self.writable {
            for (i, b) in data.iter().enumerate() {
                // SAFETY: as for `read`; the region is writable guest RAM.
                unsafe { std::ptr::write_volatile(dst.add(i), *b) };
            }
        }
        true
    }
}

/// Why an instruction was not emulated. The registers and memory are as they were, except
/// that accesses already made (the read of a read-modify-write) stay made.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum EmulatorError {
    #[error("instruction fetch at {rip:#x}: {why}")]
    Fetch { rip: u64, why: &'static str },
    #[error("no valid instruction at {rip:#x} ({bytes:02x?})")]
    Decode { rip: u64, bytes: Vec<u8> },
    #[error("{mnemonic} at {rip:#x} is not emulated ({what})")]
    Unsupported {
        rip: u64,
        mnemonic: String,
        what: &'static str,
    },
    #[error("guest address {gva:#x} does not translate: {why}")]
    PageFault { gva: u64, why: &'static str },
    #[error("guest address {gva:#x} is not canonical")]
    NonCanonical { gva: u64 },
}

/// One device access the instruction made, as the [`IoHandler`] saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmioAccess {
    pub gpa: u64,
    pub write: bool,
    len: u8,
    bytes: [u8; 8],
}

impl MmioAccess {
    fn new(gpa: u64, write: bool, data: &[u8]) -> Self {
        let mut bytes = [0; 8];
        let len = data.len().min(8);
        bytes[..len].copy_from_slice(&data[..len]);
        MmioAccess {
            gpa,
            write,
            len: len as u8,
            bytes,
        }
    }

    /// The bytes written, or read back from the device.
    pub fn data(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// At most two memory operands, each of which may straddle a page.
pub const MAX_ACCESSES: usize = 4;

/// What one call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Emulated {
    /// The instruction's length in bytes.
    pub length: usize,
    /// RIP moved past the instruction (false: a REP instruction has iterations left).
    pub completed: bool,
    accesses: [MmioAccess; MAX_ACCESSES],
    count: usize,
}

impl Emulated {
    /// The device accesses, in order.
    pub fn accesses(&self) -> &[MmioAccess] {
        &self.accesses[..self.count]
    }

    fn record(&mut self, a: MmioAccess) {
        if let Some(slot) = self.accesses.get_mut(self.count) {
            *slot = a;
            self.count += 1;
        }
    }
}

pub(crate) use exec::{decode, string_step, StringStep};

/// Carries out the instruction at `cpu.regs.rip` (one iteration of a REP string
/// instruction), updating `cpu`, guest RAM through `ram`, and the devices through `io`.
pub fn emulate(
    cpu: &mut CpuState,
    ram: &dyn GuestRam,
    io: &dyn IoHandler,
) -> Result<Emulated, EmulatorError> {
    exec::run(cpu, ram, io)
}
