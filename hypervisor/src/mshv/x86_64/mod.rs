//! The x86_64 half of the MSHV backend. MSHV does not decode MMIO (an unmapped-GPA
//! intercept gives only the address), so the vCPU runs berth's instruction emulator
//! (`crate::emulator`) over guest RAM and the VMM's `IoHandler`; it has no in-kernel IOAPIC
//! or PIC, so only `IrqChipMode::Split` exists and the VMM's IOAPIC sends MSIs (`signal_msi`,
//! an assert-virtual-interrupt hypercall) and gets the APIC EOI intercept; CPUID is
//! registered as intercept results (berth's policy applied to the host's leaves); port I/O
//! arrives as intercepts with the instruction length, so RIP is advanced here.

mod intercept;
mod regs;

use std::sync::{Arc, RwLock};

use mshv_bindings::{
    hv_intercept_parameters, hv_intercept_type_HV_INTERCEPT_TYPE_X64_CPUID,
    hv_interrupt_type_HV_X64_INTERRUPT_TYPE_FIXED, mshv_install_intercept, mshv_user_irq_entry,
    HV_INTERCEPT_ACCESS_MASK_EXECUTE,
};
use mshv_ioctls::{InterruptRequest, VcpuFd, VmFd};

use super::{MshvHypervisor, MshvVm};
use crate::arch::{IrqChipConfig, IrqChipMode};
use crate::emulator::{self, CpuState, RegionRam};
use crate::irq::{IrqChip, IrqRoute, MsiMessage};
use crate::{Error, EventFd, IoHandler, MemoryRegion, Result, Vcpu, VcpuExit};
use intercept::{Intercept, PortAccess};

/// The VMM's IOAPIC pins; the GSIs below are reserved for their MSI routes.
const PIN_COUNT: u32 = 24;

pub(super) const CAPABILITIES: crate::Capabilities = crate::Capabilities {
    irqchip_kernel: false,
    irqchip_split: true,
    readonly_memory: true,
    pio_ioeventfd: false,
    decodes_mmio: false,
};

/// Nothing to keep: the partition is complete when it is created.
pub(super) struct VmState;

impl VmState {
    /// Initialises the partition and installs the CPUID intercept (for leaves the
    /// registered results do not cover).
    pub(super) fn new(fd: &VmFd) -> Result<Self> {
        fd.initialize()
            .map_err(|e| Error::ioctl("MSHV_INITIALIZE_PARTITION", e))?;
        let cpuid = mshv_install_intercept {
            access_type_mask: HV_INTERCEPT_ACCESS_MASK_EXECUTE,
            intercept_type: hv_intercept_type_HV_INTERCEPT_TYPE_X64_CPUID,
            intercept_parameter: hv_intercept_parameters::default(),
        };
        fd.install_intercept(cpuid)
            .map_err(|e| Error::ioctl("MSHV_INSTALL_INTERCEPT (CPUID)", e))?;
        Ok(VmState)
    }
}

impl crate::arch::HypervisorArch for MshvHypervisor {
    fn supported_cpuid(&self) -> Result<Vec<crate::arch::CpuidEntry>> {
        Ok(regs::host_cpuid())
    }
}

impl MshvVm {
    pub(super) fn arch_create_irq_chip(&self, config: &IrqChipConfig) -> Result<Arc<dyn IrqChip>> {
        if config.mode != IrqChipMode::Split {
            return Err(Error::Unsupported(
                "an in-kernel IOAPIC on MSHV (only the local APICs are the hypervisor's): use --irqchip split",
            ));
        }
        Ok(Arc::new(MshvIrqChip {
            vm: self.fd.clone(),
        }))
    }

    pub(super) fn arch_create_vcpu(&self, id: u32, index: u8) -> Result<Box<dyn Vcpu>> {
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
        super::register_irqfd(&self.vm, evt, gsi)
    }

    fn unregister_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<()> {
        super::unregister_irqfd(&self.vm, evt, gsi)
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
        super::set_routing(&self.vm, &entries)
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
        let Some(msg) = super::run_vp(&self.fd)? else {
            return Ok(VcpuExit::Interrupted);
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
}
