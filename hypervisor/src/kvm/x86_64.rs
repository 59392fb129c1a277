//! x86_64 half of the KVM backend: VM platform setup and register conversions.

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_dtable, kvm_enable_cap, kvm_fpu, kvm_irq_routing_entry, kvm_lapic_state,
    kvm_msr_entry, kvm_pit_config, kvm_regs, kvm_segment, kvm_sregs, CpuId, Msrs,
    KVM_CAP_SPLIT_IRQCHIP, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
    KVM_IRQ_ROUTING_IRQCHIP, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};

use kvm_ioctls::{Cap, VcpuFd};

use super::{KvmHypervisor, KvmIrqChip, KvmVcpu, KvmVm};
use crate::x86_64::{
    CpuidEntry, DescriptorTable, Fpu, HypervisorArch, IrqChipArch, IrqChipConfig, IrqChipMode,
    LapicState, Msr, Regs, Segment, Sregs, VcpuArch, VmArch,
};
use crate::{Error, Result};

/// IOAPIC pins; GSIs 0-23 are wired.
const PIN_COUNT: u32 = 24;

// Three pages just below the 4 GiB boundary that Intel VMX needs for real-mode emulation;
// the guest memory layout keeps them out of RAM and device ranges.
const TSS_ADDR: usize = 0xfffb_d000;
const IDENTITY_MAP_ADDR: u64 = 0xfffb_c000;

impl KvmVm {
    pub(super) fn arch_setup(&self) -> Result<()> {
        self.fd
            .set_identity_map_address(IDENTITY_MAP_ADDR)
            .map_err(|e| Error::ioctl("KVM_SET_IDENTITY_MAP_ADDR", e))?;
        self.fd
            .set_tss_address(TSS_ADDR)
            .map_err(|e| Error::ioctl("KVM_SET_TSS_ADDR", e))
    }

    /// Nothing to do: x86_64 vCPUs start from their reset state, set by the boot code.
    pub(super) fn arch_init_vcpu(&self, _vcpu: &VcpuFd, _id: u32) -> Result<()> {
        Ok(())
    }

    pub(super) fn arch_create_irq_chip(&self, config: &IrqChipConfig) -> Result<ArchIrqChip> {
        if config.mode == IrqChipMode::Split {
            if !self.fd.check_extension(Cap::SplitIrqchip) {
                return Err(Error::MissingCapability("KVM_CAP_SPLIT_IRQCHIP"));
            }
            // args[0]: the GSIs reserved for the VMM's IOAPIC pins. No PIT: KVM's needs its PIC.
            let cap = kvm_enable_cap {
                cap: KVM_CAP_SPLIT_IRQCHIP,
                args: [u64::from(PIN_COUNT), 0, 0, 0],
                ..Default::default()
            };
            self.fd
                .enable_cap(&cap)
                .map_err(|e| Error::ioctl("KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)", e))?;
            return Ok(ArchIrqChip { split: true });
        }
        self.fd
            .create_irq_chip()
            .map_err(|e| Error::ioctl("KVM_CREATE_IRQCHIP", e))?;
        // The PIT drives the guest's early timer calibration; the speaker port is a dummy.
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        self.fd
            .create_pit2(pit)
            .map_err(|e| Error::ioctl("KVM_CREATE_PIT2", e))?;
        Ok(ArchIrqChip { split: false })
    }
}

impl VmArch for KvmVm {}

/// The x86_64 half of [`KvmIrqChip`]: the PIC/IOAPIC model lives in KVM unless `split`.
pub(super) struct ArchIrqChip {
    split: bool,
}

impl ArchIrqChip {
    pub(super) fn pin_count(&self) -> u32 {
        PIN_COUNT
    }

    /// KVM_IRQ_LINE takes the GSI as it is on x86_64; in split mode there is no line to drive.
    pub(super) fn irq_line_number(&self, gsi: u32) -> Result<u32> {
        if self.split {
            return Err(Error::Unsupported(
                "interrupt lines in split irqchip mode (the VMM's IOAPIC drives them)",
            ));
        }
        Ok(gsi)
    }

    /// In split mode the pin GSIs carry the VMM's MSI routes, so KVM keeps no pin routes.
    pub(super) fn pin_routes(&self) -> Vec<kvm_irq_routing_entry> {
        if self.split {
            Vec::new()
        } else {
            pin_routes()
        }
    }

    pub(super) fn irqchip_for(&self, _pin: u32) -> u32 {
        KVM_IRQCHIP_IOAPIC
    }

    pub(super) fn finalize(&self) -> Result<()> {
        Ok(())
    }
}

impl IrqChipArch for KvmIrqChip {}

/// The routes KVM sets up by default: GSI 0-15 to both PICs and the IOAPIC, 16-23 to the IOAPIC.
fn pin_routes() -> Vec<kvm_irq_routing_entry> {
    let mut v = Vec::new();
    let mut add = |gsi: u32, chip: u32, pin: u32| {
        let mut e = kvm_irq_routing_entry {
            gsi,
            type_: KVM_IRQ_ROUTING_IRQCHIP,
            ..Default::default()
        };
        e.u.irqchip.irqchip = chip;
        e.u.irqchip.pin = pin;
        v.push(e);
    };
    for gsi in 0..PIN_COUNT {
        if gsi < 8 {
            add(gsi, KVM_IRQCHIP_PIC_MASTER, gsi);
        } else if gsi < 16 {
            add(gsi, KVM_IRQCHIP_PIC_SLAVE, gsi - 8);
        }
        add(gsi, KVM_IRQCHIP_IOAPIC, gsi);
    }
    v
}

impl HypervisorArch for KvmHypervisor {
    fn supported_cpuid(&self) -> Result<Vec<CpuidEntry>> {
        let cpuid = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| Error::ioctl("KVM_GET_SUPPORTED_CPUID", e))?;
        Ok(cpuid.as_slice().iter().map(cpuid_from_kvm).collect())
    }
}

fn cpuid_from_kvm(e: &kvm_cpuid_entry2) -> CpuidEntry {
    CpuidEntry {
        function: e.function,
        index: e.index,
        flags: e.flags,
        eax: e.eax,
        ebx: e.ebx,
        ecx: e.ecx,
        edx: e.edx,
    }
}

fn cpuid_to_kvm(e: &CpuidEntry) -> kvm_cpuid_entry2 {
    kvm_cpuid_entry2 {
        function: e.function,
        index: e.index,
        flags: e.flags,
        eax: e.eax,
        ebx: e.ebx,
        ecx: e.ecx,
        edx: e.edx,
        padding: [0; 3],
    }
}

impl From<kvm_regs> for Regs {
    fn from(r: kvm_regs) -> Self {
        Regs {
            rax: r.rax,
            rbx: r.rbx,
            rcx: r.rcx,
            rdx: r.rdx,
            rsi: r.rsi,
            rdi: r.rdi,
            rsp: r.rsp,
            rbp: r.rbp,
            r8: r.r8,
            r9: r.r9,
            r10: r.r10,
            r11: r.r11,
            r12: r.r12,
            r13: r.r13,
            r14: r.r14,
            r15: r.r15,
            rip: r.rip,
            rflags: r.rflags,
        }
    }
}

impl From<&Regs> for kvm_regs {
    fn from(r: &Regs) -> Self {
        kvm_regs {
            rax: r.rax,
            rbx: r.rbx,
            rcx: r.rcx,
            rdx: r.rdx,
            rsi: r.rsi,
            rdi: r.rdi,
            rsp: r.rsp,
            rbp: r.rbp,
            r8: r.r8,
            r9: r.r9,
            r10: r.r10,
            r11: r.r11,
            r12: r.r12,
            r13: r.r13,
            r14: r.r14,
            r15: r.r15,
            rip: r.rip,
            rflags: r.rflags,
        }
    }
}

impl From<kvm_segment> for Segment {
    fn from(s: kvm_segment) -> Self {
        Segment {
            base: s.base,
            limit: s.limit,
            selector: s.selector,
            type_: s.type_,
            present: s.present != 0,
            dpl: s.dpl,
            db: s.db != 0,
            s: s.s != 0,
            l: s.l != 0,
            g: s.g != 0,
            avl: s.avl != 0,
            unusable: s.unusable != 0,
        }
    }
}

impl From<&Segment> for kvm_segment {
    fn from(s: &Segment) -> Self {
        kvm_segment {
            base: s.base,
            limit: s.limit,
            selector: s.selector,
            type_: s.type_,
            present: s.present.into(),
            dpl: s.dpl,
            db: s.db.into(),
            s: s.s.into(),
            l: s.l.into(),
            g: s.g.into(),
            avl: s.avl.into(),
            unusable: s.unusable.into(),
            padding: 0,
        }
    }
}

impl From<kvm_dtable> for DescriptorTable {
    fn from(d: kvm_dtable) -> Self {
        DescriptorTable {
            base: d.base,
            limit: d.limit,
        }
    }
}

impl From<&DescriptorTable> for kvm_dtable {
    fn from(d: &DescriptorTable) -> Self {
        kvm_dtable {
            base: d.base,
            limit: d.limit,
            ..Default::default()
        }
    }
}

impl From<kvm_sregs> for Sregs {
    fn from(s: kvm_sregs) -> Self {
        Sregs {
            cs: s.cs.into(),
            ds: s.ds.into(),
            es: s.es.into(),
            fs: s.fs.into(),
            gs: s.gs.into(),
            ss: s.ss.into(),
            tr: s.tr.into(),
            ldt: s.ldt.into(),
            gdt: s.gdt.into(),
            idt: s.idt.into(),
            cr0: s.cr0,
            cr2: s.cr2,
            cr3: s.cr3,
            cr4: s.cr4,
            cr8: s.cr8,
            efer: s.efer,
            apic_base: s.apic_base,
        }
    }
}

/// Applies the neutral fields over KVM's current sregs (keeping its interrupt bitmap).
fn sregs_into_kvm(s: &Sregs, k: &mut kvm_sregs) {
    k.cs = (&s.cs).into();
    k.ds = (&s.ds).into();
    k.es = (&s.es).into();
    k.fs = (&s.fs).into();
    k.gs = (&s.gs).into();
    k.ss = (&s.ss).into();
    k.tr = (&s.tr).into();
    k.ldt = (&s.ldt).into();
    k.gdt = (&s.gdt).into();
    k.idt = (&s.idt).into();
    k.cr0 = s.cr0;
    k.cr2 = s.cr2;
    k.cr3 = s.cr3;
    k.cr4 = s.cr4;
    k.cr8 = s.cr8;
    k.efer = s.efer;
    k.apic_base = s.apic_base;
}

impl VcpuArch for KvmVcpu {
    fn get_regs(&self) -> Result<Regs> {
        self.fd
            .get_regs()
            .map(Regs::from)
            .map_err(|e| Error::ioctl("KVM_GET_REGS", e))
    }

    fn set_regs(&self, regs: &Regs) -> Result<()> {
        self.fd
            .set_regs(&regs.into())
            .map_err(|e| Error::ioctl("KVM_SET_REGS", e))
    }

    fn get_sregs(&self) -> Result<Sregs> {
        self.fd
            .get_sregs()
            .map(Sregs::from)
            .map_err(|e| Error::ioctl("KVM_GET_SREGS", e))
    }

    fn set_sregs(&self, sregs: &Sregs) -> Result<()> {
        let mut k = self
            .fd
            .get_sregs()
            .map_err(|e| Error::ioctl("KVM_GET_SREGS", e))?;
        sregs_into_kvm(sregs, &mut k);
        self.fd
            .set_sregs(&k)
            .map_err(|e| Error::ioctl("KVM_SET_SREGS", e))
    }

    fn get_fpu(&self) -> Result<Fpu> {
        let f = self
            .fd
            .get_fpu()
            .map_err(|e| Error::ioctl("KVM_GET_FPU", e))?;
        Ok(Fpu {
            fcw: f.fcw,
            fsw: f.fsw,
            ftwx: f.ftwx,
            mxcsr: f.mxcsr,
            fpr: f.fpr,
            xmm: f.xmm,
        })
    }

    fn set_fpu(&self, fpu: &Fpu) -> Result<()> {
        let f = kvm_fpu {
            fcw: fpu.fcw,
            fsw: fpu.fsw,
            ftwx: fpu.ftwx,
            mxcsr: fpu.mxcsr,
            fpr: fpu.fpr,
            xmm: fpu.xmm,
            ..Default::default()
        };
        self.fd
            .set_fpu(&f)
            .map_err(|e| Error::ioctl("KVM_SET_FPU", e))
    }

    fn set_cpuid(&self, entries: &[CpuidEntry]) -> Result<()> {
        let kvm_entries: Vec<kvm_cpuid_entry2> = entries.iter().map(cpuid_to_kvm).collect();
        let cpuid = CpuId::from_entries(&kvm_entries)
            .map_err(|_| Error::InvalidArgument(format!("{} CPUID entries", entries.len())))?;
        self.fd
            .set_cpuid2(&cpuid)
            .map_err(|e| Error::ioctl("KVM_SET_CPUID2", e))
    }

    fn get_msrs(&self, msrs: &mut [Msr]) -> Result<()> {
        let entries: Vec<kvm_msr_entry> = msrs
            .iter()
            .map(|m| kvm_msr_entry {
                index: m.index,
                ..Default::default()
            })
            .collect();
        let mut kvm_msrs = Msrs::from_entries(&entries)
            .map_err(|_| Error::InvalidArgument(format!("{} MSRs", msrs.len())))?;
        let n = self
            .fd
            .get_msrs(&mut kvm_msrs)
            .map_err(|e| Error::ioctl("KVM_GET_MSRS", e))?;
        if n != msrs.len() {
            return Err(Error::InvalidArgument(format!(
                "MSR {:#x} cannot be read",
                msrs[n].index
            )));
        }
        for (m, k) in msrs.iter_mut().zip(kvm_msrs.as_slice()) {
            m.value = k.data;
        }
        Ok(())
    }

    fn set_msrs(&self, msrs: &[Msr]) -> Result<()> {
        let entries: Vec<kvm_msr_entry> = msrs
            .iter()
            .map(|m| kvm_msr_entry {
                index: m.index,
                data: m.value,
                ..Default::default()
            })
            .collect();
        let kvm_msrs = Msrs::from_entries(&entries)
            .map_err(|_| Error::InvalidArgument(format!("{} MSRs", msrs.len())))?;
        let n = self
            .fd
            .set_msrs(&kvm_msrs)
            .map_err(|e| Error::ioctl("KVM_SET_MSRS", e))?;
        if n != msrs.len() {
            return Err(Error::InvalidArgument(format!(
                "MSR {:#x} cannot be written",
                msrs[n].index
            )));
        }
        Ok(())
    }

    fn get_lapic(&self) -> Result<LapicState> {
        let k = self
            .fd
            .get_lapic()
            .map_err(|e| Error::ioctl("KVM_GET_LAPIC", e))?;
        let mut l = LapicState::default();
        for (d, s) in l.regs.iter_mut().zip(k.regs.iter()) {
            *d = *s as u8;
        }
        Ok(l)
    }

    fn set_lapic(&self, lapic: &LapicState) -> Result<()> {
        let mut k = kvm_lapic_state::default();
        for (d, s) in k.regs.iter_mut().zip(lapic.regs.iter()) {
            *d = *s as _;
        }
        self.fd
            .set_lapic(&k)
            .map_err(|e| Error::ioctl("KVM_SET_LAPIC", e))
    }
}
