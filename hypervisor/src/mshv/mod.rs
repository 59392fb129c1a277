//! The MSHV backend (Microsoft Hypervisor, with Linux as Hyper-V's root partition:
//! `/dev/mshv`), on mshv-ioctls. x86_64 and aarch64.
//!
//! What is the same on both architectures lives here: the partition's memory, ioeventfds,
//! irqfds and the interrupt routing table. What differs (`x86_64/`, `aarch64/`): how the
//! partition is set up, the interrupt controller, the vCPU's run loop and registers.
//!
//! Nothing here has run against a real /dev/mshv (none on berth's build machines): the
//! intercept translation is unit-tested with message bytes in the TLFS layouts, the rest is
//! built and linted in CI with `--features mshv` on both targets.

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "x86_64")]
mod x86_64;

#[cfg(target_arch = "aarch64")]
use aarch64 as arch;
#[cfg(target_arch = "x86_64")]
use x86_64 as arch;

use std::sync::{Arc, RwLock};

use mshv_bindings::{
    hv_message, mshv_user_irq_entry, mshv_user_irq_table, mshv_user_mem_region,
    MSHV_SET_MEM_BIT_EXECUTABLE, MSHV_SET_MEM_BIT_WRITABLE,
};
use mshv_ioctls::{Mshv, VcpuFd, VmFd};

use crate::arch::IrqChipConfig;
use crate::irq::{Datamatch, IoEventAddress, IrqChip};
use crate::{Error, EventFd, Hypervisor, HypervisorKind, MemoryRegion, Result, Vcpu, Vm};

const MSHV_PATH: &str = "/dev/mshv";
const PAGE_SHIFT: u64 = 12;
/// Hyper-V's partitions are sized for this many virtual processors (the VP index is a byte
/// in mshv-ioctls' create_vcpu).
const MAX_VCPUS: u32 = 255;

/// Handle on /dev/mshv.
pub struct MshvHypervisor {
    mshv: Mshv,
}

impl MshvHypervisor {
    pub fn new() -> Result<Self> {
        let mshv = Mshv::new().map_err(|e| {
            Error::device_open(
                MSHV_PATH,
                e.errno(),
                "berth must run in Hyper-V's root partition with the mshv_root driver loaded (modprobe mshv_root)",
            )
        })?;
        Ok(MshvHypervisor { mshv })
    }
}

impl Hypervisor for MshvHypervisor {
    fn kind(&self) -> HypervisorKind {
        HypervisorKind::Mshv
    }

    fn max_vcpus(&self) -> u32 {
        MAX_VCPUS
    }

    fn runtime_ioctls(&self) -> crate::RuntimeIoctls {
        // mshv-ioctls exports its request numbers. Other threads: irqfds, ioeventfds, MSI
        // routes, and hypercalls (asserting an interrupt). vCPU threads also run the VP and
        // read and write its registers (intercepts, the emulator) through hypercalls or the VP
        // state calls.
        let vm = vec![
            mshv_ioctls::MSHV_IRQFD(),
            mshv_ioctls::MSHV_IOEVENTFD(),
            mshv_ioctls::MSHV_SET_MSI_ROUTING(),
            mshv_ioctls::MSHV_ROOT_HVCALL(),
        ];
        let mut vcpu = vm.clone();
        vcpu.extend([
            mshv_ioctls::MSHV_RUN_VP(),
            mshv_ioctls::MSHV_GET_VP_REGISTERS(),
            mshv_ioctls::MSHV_SET_VP_REGISTERS(),
        ]);
        // The VP state calls (x86_64: LAPIC, XSAVE) do not exist on arm64.
        #[cfg(target_arch = "x86_64")]
        vcpu.extend([
            mshv_ioctls::MSHV_GET_VP_STATE(),
            mshv_ioctls::MSHV_SET_VP_STATE(),
        ]);
        crate::RuntimeIoctls { vcpu, vm }
    }

    fn capabilities(&self) -> crate::Capabilities {
        arch::CAPABILITIES
    }

    fn create_vm(&self) -> Result<Arc<dyn Vm>> {
        let fd = self
            .mshv
            .create_vm()
            .map_err(|e| Error::ioctl("MSHV_CREATE_PARTITION", e))?;
        let arch = arch::VmState::new(&fd)?;
        Ok(Arc::new(MshvVm {
            fd: Arc::new(fd),
            regions: Arc::new(RwLock::new(Vec::new())),
            arch,
        }))
    }
}

/// An MSHV partition.
pub struct MshvVm {
    fd: Arc<VmFd>,
    /// Guest RAM, for the x86 emulator's page walks and accesses.
    regions: Arc<RwLock<Vec<MemoryRegion>>>,
    /// What the architecture's half keeps of the partition's set-up (read on aarch64).
    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    arch: arch::VmState,
}

fn mem_region(r: &MemoryRegion) -> mshv_user_mem_region {
    let mut flags = 1u8 << MSHV_SET_MEM_BIT_EXECUTABLE;
    if !r.read_only {
        flags |= 1 << MSHV_SET_MEM_BIT_WRITABLE;
    }
    mshv_user_mem_region {
        size: r.size,
        guest_pfn: r.guest_addr >> PAGE_SHIFT,
        userspace_addr: r.host_addr,
        flags,
        ..Default::default()
    }
}

impl Vm for MshvVm {
    unsafe fn add_memory_region(&self, region: MemoryRegion) -> Result<()> {
        self.fd
            .map_user_memory(mem_region(&region))
            .map_err(|e| Error::ioctl("MSHV_SET_GUEST_MEMORY", e))?;
        let mut regions = self.regions.write().unwrap_or_else(|e| e.into_inner());
        regions.retain(|r| r.slot != region.slot);
        regions.push(region);
        Ok(())
    }

    fn remove_memory_region(&self, region: MemoryRegion) -> Result<()> {
        self.fd
            .unmap_user_memory(mem_region(&region))
            .map_err(|e| Error::ioctl("MSHV_SET_GUEST_MEMORY (unmap)", e))?;
        self.regions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|r| r.slot != region.slot);
        Ok(())
    }

    fn create_irq_chip(&self, config: &IrqChipConfig) -> Result<Arc<dyn IrqChip>> {
        self.arch_create_irq_chip(config)
    }

    fn create_vcpu(&self, id: u32) -> Result<Box<dyn Vcpu>> {
        let index = u8::try_from(id)
            .map_err(|_| Error::InvalidArgument(format!("vCPU {id}: MSHV takes at most 255")))?;
        self.arch_create_vcpu(id, index)
    }

    fn register_ioevent(
        &self,
        evt: &EventFd,
        addr: IoEventAddress,
        datamatch: Datamatch,
    ) -> Result<()> {
        let addr = ioevent_addr(addr)?;
        match datamatch {
            Datamatch::Any => self
                .fd
                .register_ioevent(evt, &addr, mshv_ioctls::NoDatamatch),
            Datamatch::U8(v) => self.fd.register_ioevent(evt, &addr, v),
            Datamatch::U16(v) => self.fd.register_ioevent(evt, &addr, v),
            Datamatch::U32(v) => self.fd.register_ioevent(evt, &addr, v),
            Datamatch::U64(v) => self.fd.register_ioevent(evt, &addr, v),
        }
        .map_err(|e| Error::ioctl("MSHV_IOEVENTFD", e))
    }

    fn unregister_ioevent(
        &self,
        evt: &EventFd,
        addr: IoEventAddress,
        datamatch: Datamatch,
    ) -> Result<()> {
        let addr = ioevent_addr(addr)?;
        match datamatch {
            Datamatch::Any => self
                .fd
                .unregister_ioevent(evt, &addr, mshv_ioctls::NoDatamatch),
            Datamatch::U8(v) => self.fd.unregister_ioevent(evt, &addr, v),
            Datamatch::U16(v) => self.fd.unregister_ioevent(evt, &addr, v),
            Datamatch::U32(v) => self.fd.unregister_ioevent(evt, &addr, v),
            Datamatch::U64(v) => self.fd.unregister_ioevent(evt, &addr, v),
        }
        .map_err(|e| Error::ioctl("MSHV_IOEVENTFD (deassign)", e))
    }
}

impl crate::arch::VmArch for MshvVm {}

/// MSHV has MMIO ioeventfds only.
fn ioevent_addr(addr: IoEventAddress) -> Result<mshv_ioctls::IoEventAddress> {
    match addr {
        IoEventAddress::Mmio(a) => Ok(mshv_ioctls::IoEventAddress::Mmio(a)),
        IoEventAddress::Pio(_) => Err(Error::Unsupported("port ioeventfds on MSHV")),
    }
}

fn register_irqfd(vm: &VmFd, evt: &EventFd, gsi: u32) -> Result<()> {
    vm.register_irqfd(evt, gsi)
        .map_err(|e| Error::ioctl("MSHV_IRQFD", e))
}

fn unregister_irqfd(vm: &VmFd, evt: &EventFd, gsi: u32) -> Result<()> {
    vm.unregister_irqfd(evt, gsi)
        .map_err(|e| Error::ioctl("MSHV_IRQFD (deassign)", e))
}

/// Replaces the partition's interrupt routing table with `entries`.
fn set_routing(vm: &VmFd, entries: &[mshv_user_irq_entry]) -> Result<()> {
    // mshv_user_irq_table: a u32 count and a reserved u32, then the entries (16 bytes,
    // 4-aligned), laid out in a u32 buffer.
    let mut buf = vec![0u32; 2 + entries.len() * 4];
    buf[0] = entries.len() as u32;
    for (i, e) in entries.iter().enumerate() {
        buf[2 + i * 4..6 + i * 4].copy_from_slice(&[e.gsi, e.address_lo, e.address_hi, e.data]);
    }
    // SAFETY: buf holds a complete mshv_user_irq_table header followed by `nr` entries,
    // with u32 alignment (the struct's); the ioctl reads exactly that.
    let table = unsafe { &*(buf.as_ptr() as *const mshv_user_irq_table) };
    vm.set_msi_routing(table)
        .map_err(|e| Error::ioctl("MSHV_SET_MSI_ROUTING", e))
}

/// Runs the VP until its next intercept; `None` when a signal (a kick) interrupted it.
fn run_vp(fd: &VcpuFd) -> Result<Option<hv_message>> {
    match fd.run() {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Ok(None),
        Err(e) => Err(Error::ioctl("MSHV_RUN_VP", e)),
    }
}

/// Intercept messages for the tests of both halves, built byte by byte in the Hyper-V TLFS
/// layouts (a 16-byte message header, then the payload), as mshv-bindings asserts them.
#[cfg(test)]
mod test_messages {
    use mshv_bindings::hv_message;

    /// A 256-byte message of `kind` whose payload has `fields` at their offsets.
    pub fn message(kind: u32, fields: &[(usize, &[u8])]) -> hv_message {
        let mut b = [0u8; 256];
        b[0..4].copy_from_slice(&kind.to_le_bytes());
        b[4] = 240; // payload size
        for (at, bytes) in fields {
            b[16 + at..16 + at + bytes.len()].copy_from_slice(bytes);
        }
        // SAFETY: hv_message is plain integers and unions of them, 256 bytes; any bytes are
        // a valid value, and read_unaligned copies them out.
        unsafe { std::ptr::read_unaligned(b.as_ptr().cast()) }
    }

    /// 1000 messages of each of `kinds` with pseudo-random payloads (xorshift, fixed seed).
    pub fn random(kinds: &[u32]) -> Vec<hv_message> {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut out = Vec::with_capacity(kinds.len() * 1000);
        for &kind in kinds {
            for _ in 0..1000 {
                let mut payload = [0u8; 240];
                for b in payload.iter_mut() {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    *b = seed as u8;
                }
                out.push(message(kind, &[(0, &payload)]));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_map_by_page_with_their_rights() {
        let r = mem_region(&MemoryRegion {
            slot: 0,
            guest_addr: 0x10_0000,
            size: 0x20_0000,
            host_addr: 0x7f00_0000_0000,
            read_only: true,
        });
        assert_eq!(
            (r.guest_pfn, r.size, r.userspace_addr),
            (0x100, 0x20_0000, 0x7f00_0000_0000)
        );
        assert_eq!(r.flags, 1 << MSHV_SET_MEM_BIT_EXECUTABLE);
    }
}
