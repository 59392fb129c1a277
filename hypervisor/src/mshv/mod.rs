//! The MSHV backend (Microsoft Hypervisor, with Linux as Hyper-V's root partition:
//! `/dev/mshv`), on mshv-ioctls. x86_64.
//!
//! What differs from KVM, and how this backend meets berth's traits: MSHV does not decode
//! MMIO (an unmapped-GPA intercept gives only the address), so the vCPU runs berth's
//! instruction emulator (`crate::emulator`) over guest RAM and the VMM's `IoHandler`; it has
//! no in-kernel IOAPIC or PIC, so only `IrqChipMode::Split` exists and the VMM's IOAPIC sends
//! MSIs (`signal_msi`, an assert-virtual-interrupt hypercall) and gets the APIC EOI intercept;
//! CPUID is registered as intercept results (berth's policy applied to the host's leaves);
//! port I/O arrives as intercepts with the instruction length, so RIP is advanced here.
//!
//! Nothing here has run against a real /dev/mshv (none on berth's build machines): the
//! intercept translation is unit-tested with message bytes in the TLFS layouts, the rest is
//! built and linted in CI with `--features mshv`.

mod intercept;
mod regs;

use std::sync::{Arc, RwLock};

use mshv_bindings::{
    hv_intercept_parameters, hv_intercept_type_HV_INTERCEPT_TYPE_X64_CPUID,
    hv_interrupt_type_HV_X64_INTERRUPT_TYPE_FIXED, mshv_install_intercept, mshv_user_irq_entry,
    mshv_user_irq_table, mshv_user_mem_region, HV_INTERCEPT_ACCESS_MASK_EXECUTE,
    MSHV_SET_MEM_BIT_EXECUTABLE, MSHV_SET_MEM_BIT_WRITABLE,
};
use mshv_ioctls::{InterruptRequest, Mshv, VcpuFd, VmFd};

use crate::arch::{IrqChipConfig, IrqChipMode};
use crate::emulator::{self, CpuState, RegionRam};
use crate::irq::{Datamatch, IoEventAddress, IrqChip, IrqRoute, MsiMessage};
use crate::{
    Error, EventFd, Hypervisor, HypervisorKind, IoHandler, MemoryRegion, Result, Vcpu, VcpuExit, Vm,
};
use intercept::{Intercept, PortAccess};

const MSHV_PATH: &str = "/dev/mshv";
const PAGE_SHIFT: u64 = 12;
/// The VMM's IOAPIC pins; the GSIs below are reserved for their MSI routes.
const PIN_COUNT: u32 = 24;
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
            mshv_ioctls::MSHV_GET_VP_STATE(),
            mshv_ioctls::MSHV_SET_VP_STATE(),
            mshv_ioctls::MSHV_GET_VP_REGISTERS(),
            mshv_ioctls::MSHV_SET_VP_REGISTERS(),
        ]);
        crate::RuntimeIoctls { vcpu, vm }
    }

    fn capabilities(&self) -> crate::Capabilities {
        crate::Capabilities {
            irqchip_kernel: false,
            irqchip_split: true,
            readonly_memory: true,
            pio_ioeventfd: false,
            decodes_mmio: false,
        }
    }

    fn create_vm(&self) -> Result<Arc<dyn Vm>> {
        let fd = self
            .mshv
            .create_vm()
            .map_err(|e| Error::ioctl("MSHV_CREATE_PARTITION", e))?;
        fd.initialize()
            .map_err(|e| Error::ioctl("MSHV_INITIALIZE_PARTITION", e))?;
        // CPUID exits let the vCPU answer leaves its registered results do not cover.
        let cpuid = mshv_install_intercept {
            access_type_mask: HV_INTERCEPT_ACCESS_MASK_EXECUTE,
            intercept_type: hv_intercept_type_HV_INTERCEPT_TYPE_X64_CPUID,
            intercept_parameter: hv_intercept_parameters::default(),
        };
        fd.install_intercept(cpuid)
            .map_err(|e| Error::ioctl("MSHV_INSTALL_INTERCEPT (CPUID)", e))?;
        Ok(Arc::new(MshvVm {
            fd: Arc::new(fd),
            regions: Arc::new(RwLock::new(Vec::new())),
        }))
    }
}

impl crate::arch::HypervisorArch for MshvHypervisor {
    fn supported_cpuid(&self) -> Result<Vec<crate::arch::CpuidEntry>> {
        Ok(regs::host_cpuid())
    }
}

/// An MSHV partition.
pub struct MshvVm {
    fd: Arc<VmFd>,
    /// Guest RAM, for the emulator's page walks and accesses.
    regions: Arc<RwLock<Vec<MemoryRegion>>>,
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
        if config.mode != IrqChipMode::Split {
            return Err(Error::Unsupported(
                "an in-kernel IOAPIC on MSHV (only the local APICs are the hypervisor's): use --irqchip split",
            ));
        }
        Ok(Arc::new(MshvIrqChip {
            vm: self.fd.clone(),
        }))
    }

    fn create_vcpu(&self, id: u32) -> Result<Box<dyn Vcpu>> {
        let index = u8::try_from(id)
            .map_err(|_| Error::InvalidArgument(format!("vCPU {id}: MSHV takes at most 255")))?;
        let fd = self
            .fd
            .create_vcpu(index)
            .map_err(|e| Error::ioctl("MSHV_CREATE_VP", e))?;
        Ok(Box::new(MshvVcpu {
            id,
            fd,
            regions: self.regions.clone(),
            cpuid: Vec::new(),
        }))
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

/// The local APICs are the hypervisor's; pins belong to the VMM's IOAPIC.
pub struct MshvIrqChip {
    vm: Arc<VmFd>,
}

impl IrqChip for MshvIrqChip {
    fn pin_count(&self) -> u32 {
        PIN_COUNT
    }

    fn set_irq_line(&self, _gsi: u32, _level: bool) -> Result<()> {
        Err(Error::Unsupported(
            "interrupt lines on MSHV (the VMM's IOAPIC drives them)",
        ))
    }

    fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<()> {
        self.vm
            .register_irqfd(evt, gsi)
            .map_err(|e| Error::ioctl("MSHV_IRQFD", e))
    }

    fn unregister_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<()> {
        self.vm
            .unregister_irqfd(evt, gsi)
            .map_err(|e| Error::ioctl("MSHV_IRQFD (deassign)", e))
    }

    fn set_msi_routes(&self, routes: &[IrqRoute]) -> Result<()> {
        let entries: Vec<mshv_user_irq_entry> = routes
            .iter()
            .filter_map(|r| match *r {
                IrqRoute::Msi { gsi, msi } => Some(mshv_user_irq_entry {
                    gsi,
                    address_lo: msi.address as u32,
                    address_hi: (msi.address >> 32) as u32,
                    data: msi.data,
                }),
                // No in-kernel pins to route to.
                IrqRoute::Pin { .. } => None,
            })
            .collect();
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
        self.vm
            .set_msi_routing(table)
            .map_err(|e| Error::ioctl("MSHV_SET_MSI_ROUTING", e))
    }

    fn signal_msi(&self, msi: MsiMessage) -> Result<()> {
        self.vm
            .request_virtual_interrupt(&interrupt_request(msi))
            .map_err(|e| Error::ioctl("HVCALL_ASSERT_VIRTUAL_INTERRUPT", e))
    }
}

impl crate::arch::IrqChipArch for MshvIrqChip {}

/// An x86 MSI (address 0xFEEx_xxxx, data) as the interrupt Hyper-V asserts.
fn interrupt_request(msi: MsiMessage) -> InterruptRequest {
    let dest = (msi.address >> 12) & 0xff;
    InterruptRequest {
        // Delivery mode bits 8-10 of the data are Hyper-V's interrupt types 0-7.
        interrupt_type: hv_interrupt_type_HV_X64_INTERRUPT_TYPE_FIXED + ((msi.data >> 8) & 0x7),
        apic_id: dest,
        vector: msi.data & 0xff,
        level_triggered: msi.data & (1 << 15) != 0,
        logical_destination_mode: msi.address & (1 << 2) != 0,
        long_mode: false,
    }
}

/// An MSHV virtual processor.
pub struct MshvVcpu {
    id: u32,
    fd: VcpuFd,
    regions: Arc<RwLock<Vec<MemoryRegion>>>,
    /// What `set_cpuid` registered, to answer CPUID intercepts it does not cover.
    cpuid: Vec<crate::arch::CpuidEntry>,
}

impl MshvVcpu {
    fn port(&self, p: PortAccess, io: &dyn IoHandler) -> Result<VcpuExit> {
        // INS/OUTS: the emulator does one element from the registers and guest memory.
        if p.string {
            return self.memory(io);
        }
        let mut r = self
            .fd
            .get_regs()
            .map_err(|e| Error::ioctl("get regs", e))?;
        let mut bytes = p.rax.to_le_bytes();
        if p.write {
            io.pio_write(p.port, &bytes[..p.size]);
        } else {
            io.pio_read(p.port, &mut bytes[..p.size]);
            // IN writes AL, AX or EAX; a 32-bit IN clears the upper half of RAX.
            let v = u64::from_le_bytes(bytes);
            r.rax = match p.size {
                1 => (p.rax & !0xff) | (v & 0xff),
                2 => (p.rax & !0xffff) | (v & 0xffff),
                _ => v & 0xffff_ffff,
            };
        }
        r.rip = p.rip.wrapping_add(u64::from(p.length));
        self.fd
            .set_regs(&r)
            .map_err(|e| Error::ioctl("set regs", e))?;
        Ok(VcpuExit::Io)
    }

    /// Emulates the instruction at RIP (an MMIO access, or INS/OUTS).
    fn memory(&self, io: &dyn IoHandler) -> Result<VcpuExit> {
        let r = self
            .fd
            .get_regs()
            .map_err(|e| Error::ioctl("get regs", e))?;
        let s = self
            .fd
            .get_sregs()
            .map_err(|e| Error::ioctl("get sregs", e))?;
        let mut cpu = CpuState {
            regs: regs::regs_from(&r),
            sregs: regs::sregs_from(&s),
        };
        let regions = self.regions.read().unwrap_or_else(|e| e.into_inner());
        // SAFETY: these are the VM's memory regions, whose host mappings the VMM keeps while
        // the VM exists (add_memory_region's contract), and the VM outlives its vCPUs.
        let ram = unsafe { RegionRam::new(&regions, true) };
        match emulator::emulate(&mut cpu, &ram, io) {
            Ok(_) => {
                self.fd
                    .set_regs(&regs::regs_into(&cpu.regs))
                    .map_err(|e| Error::ioctl("set regs", e))?;
                Ok(VcpuExit::Io)
            }
            Err(e) => Ok(VcpuExit::Unhandled {
                what: format!("an MMIO access berth cannot emulate: {e}"),
            }),
        }
    }

    fn cpuid(&self, rax: u64, rcx: u64, rip: u64, length: u8, default: [u64; 4]) -> Result<()> {
        let (leaf, sub) = (rax as u32, rcx as u32);
        let v = self
            .cpuid
            .iter()
            .find(|e| {
                e.function == leaf
                    && (e.flags & crate::arch::CPUID_FLAG_SIGNIFICANT_INDEX == 0 || e.index == sub)
            })
            .map(|e| [e.eax, e.ebx, e.ecx, e.edx].map(u64::from))
            .unwrap_or(default);
        let mut r = self
            .fd
            .get_regs()
            .map_err(|e| Error::ioctl("get regs", e))?;
        (r.rax, r.rbx, r.rcx, r.rdx) = (v[0], v[1], v[2], v[3]);
        r.rip = rip.wrapping_add(u64::from(length));
        self.fd
            .set_regs(&r)
            .map_err(|e| Error::ioctl("set regs", e))
    }
}

impl Vcpu for MshvVcpu {
    fn id(&self) -> u32 {
        self.id
    }

    fn run(&mut self, io: &dyn IoHandler) -> Result<VcpuExit> {
        let msg = match self.fd.run() {
            Ok(m) => m,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                return Ok(VcpuExit::Interrupted)
            }
            Err(e) => return Err(Error::ioctl("MSHV_RUN_VP", e)),
        };
        Ok(match intercept::decode(&msg) {
            Intercept::Halt => VcpuExit::Halt,
            Intercept::Unrecoverable => VcpuExit::Shutdown,
            Intercept::Port(p) => self.port(p, io)?,
            Intercept::Memory { .. } => self.memory(io)?,
            Intercept::Cpuid {
                rax,
                rcx,
                rip,
                length,
                default,
            } => {
                self.cpuid(rax, rcx, rip, length, default)?;
                VcpuExit::Io
            }
            // MSRs the hypervisor does not handle: reads give 0, writes are dropped (as
            // KVM's ignore_msrs would), logged once in a while.
            Intercept::Msr {
                index,
                write,
                rip,
                length,
                ..
            } => {
                log::debug!(
                    "MSHV: {} of MSR {index:#x} ignored",
                    if write { "write" } else { "read" }
                );
                // One register round trip: a read's EDX:EAX and RIP past the instruction.
                let mut r = self
                    .fd
                    .get_regs()
                    .map_err(|e| Error::ioctl("get regs", e))?;
                if !write {
                    (r.rax, r.rdx) = (0, 0);
                }
                r.rip = rip.wrapping_add(u64::from(length));
                self.fd
                    .set_regs(&r)
                    .map_err(|e| Error::ioctl("set regs", e))?;
                VcpuExit::Io
            }
            Intercept::ApicEoi { vector } => VcpuExit::IoapicEoi { vector },
            Intercept::Other(kind) => VcpuExit::Unhandled {
                what: format!("MSHV message {kind:#x}"),
            },
        })
    }
}

impl crate::arch::VcpuArch for MshvVcpu {
    fn get_regs(&self) -> Result<crate::arch::Regs> {
        let r = self
            .fd
            .get_regs()
            .map_err(|e| Error::ioctl("get regs", e))?;
        Ok(regs::regs_from(&r))
    }

    fn set_regs(&self, r: &crate::arch::Regs) -> Result<()> {
        self.fd
            .set_regs(&regs::regs_into(r))
            .map_err(|e| Error::ioctl("set regs", e))
    }

    fn get_sregs(&self) -> Result<crate::arch::Sregs> {
        let s = self
            .fd
            .get_sregs()
            .map_err(|e| Error::ioctl("get sregs", e))?;
        Ok(regs::sregs_from(&s))
    }

    fn set_sregs(&self, s: &crate::arch::Sregs) -> Result<()> {
        let mut m = self
            .fd
            .get_sregs()
            .map_err(|e| Error::ioctl("get sregs", e))?;
        regs::sregs_into(s, &mut m);
        self.fd
            .set_sregs(&m)
            .map_err(|e| Error::ioctl("set sregs", e))
    }

    fn get_fpu(&self) -> Result<crate::arch::Fpu> {
        let f = self.fd.get_fpu().map_err(|e| Error::ioctl("get fpu", e))?;
        Ok(regs::fpu_from(&f))
    }

    fn set_fpu(&self, f: &crate::arch::Fpu) -> Result<()> {
        self.fd
            .set_fpu(&regs::fpu_into(f))
            .map_err(|e| Error::ioctl("set fpu", e))
    }

    fn set_cpuid(&self, entries: &[crate::arch::CpuidEntry]) -> Result<()> {
        let hv: Vec<_> = entries.iter().map(regs::cpuid_into).collect();
        let cpuid = mshv_bindings::CpuId::from_entries(&hv)
            .map_err(|_| Error::InvalidArgument(format!("{} CPUID entries", entries.len())))?;
        self.fd
            .register_intercept_result_cpuid(&cpuid)
            .map_err(|e| Error::ioctl("HVCALL_REGISTER_INTERCEPT_RESULT (CPUID)", e))
    }

    fn get_msrs(&self, msrs: &mut [crate::arch::Msr]) -> Result<()> {
        let entries: Vec<mshv_bindings::msr_entry> = msrs
            .iter()
            .map(|m| mshv_bindings::msr_entry {
                index: m.index,
                ..Default::default()
            })
            .collect();
        let mut list = mshv_bindings::Msrs::from_entries(&entries)
            .map_err(|_| Error::InvalidArgument(format!("{} MSRs", msrs.len())))?;
        let n = self
            .fd
            .get_msrs(&mut list)
            .map_err(|e| Error::ioctl("get MSRs", e))?;
        if n != msrs.len() {
            return Err(Error::InvalidArgument(format!(
                "MSR {:#x} cannot be read",
                msrs[n.min(msrs.len() - 1)].index
            )));
        }
        for (m, e) in msrs.iter_mut().zip(list.as_slice()) {
            m.value = e.data;
        }
        Ok(())
    }

    fn set_msrs(&self, msrs: &[crate::arch::Msr]) -> Result<()> {
        let entries: Vec<mshv_bindings::msr_entry> = msrs
            .iter()
            .map(|m| mshv_bindings::msr_entry {
                index: m.index,
                data: m.value,
                ..Default::default()
            })
            .collect();
        let list = mshv_bindings::Msrs::from_entries(&entries)
            .map_err(|_| Error::InvalidArgument(format!("{} MSRs", msrs.len())))?;
        let n = self
            .fd
            .set_msrs(&list)
            .map_err(|e| Error::ioctl("set MSRs", e))?;
        if n != msrs.len() {
            return Err(Error::InvalidArgument(format!(
                "MSR {:#x} cannot be written",
                msrs[n.min(msrs.len() - 1)].index
            )));
        }
        Ok(())
    }

    fn get_lapic(&self) -> Result<crate::arch::LapicState> {
        let l = self
            .fd
            .get_lapic()
            .map_err(|e| Error::ioctl("get LAPIC", e))?;
        Ok(regs::lapic_from(&l))
    }

    fn set_lapic(&self, l: &crate::arch::LapicState) -> Result<()> {
        self.fd
            .set_lapic(&regs::lapic_into(l))
            .map_err(|e| Error::ioctl("set LAPIC", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_msi_becomes_the_interrupt_hyper_v_asserts() {
        // Vector 0x31 to APIC 3, physical, edge, fixed.
        let r = interrupt_request(MsiMessage {
            address: 0xfee0_3000,
            data: 0x31,
            devid: None,
        });
        assert_eq!(
            (
                r.apic_id,
                r.vector,
                r.level_triggered,
                r.logical_destination_mode
            ),
            (3, 0x31, false, false)
        );
        assert_eq!(
            r.interrupt_type,
            hv_interrupt_type_HV_X64_INTERRUPT_TYPE_FIXED
        );
        // Level-triggered, logical, lowest priority (mode 1): what the IOAPIC sends.
        let r = interrupt_request(MsiMessage {
            address: 0xfee0_f004,
            data: 0xc141,
            devid: None,
        });
        assert_eq!(
            (
                r.apic_id,
                r.vector,
                r.level_triggered,
                r.logical_destination_mode
            ),
            (0xf, 0x41, true, true)
        );
        assert_eq!(r.interrupt_type, 1);
    }

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
