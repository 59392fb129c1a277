//! x86_64 register state and the x86_64 parts of the traits, in backend-neutral form.

use crate::Result;

/// General-purpose registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
}

/// A segment register with its hidden descriptor part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub base: u64,
    pub limit: u32,
    pub selector: u16,
    pub type_: u8,
    pub present: bool,
    pub dpl: u8,
    /// Default operation size (1 = 32-bit).
    pub db: bool,
    /// Code or data (true) versus system segment.
    pub s: bool,
    /// 64-bit code segment.
    pub l: bool,
    /// Granularity (limit in 4 KiB units).
    pub g: bool,
    pub avl: bool,
    pub unusable: bool,
}

/// GDTR / IDTR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DescriptorTable {
    pub base: u64,
    pub limit: u16,
}

/// Special registers: segments, descriptor tables, control registers, EFER, APIC base.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sregs {
    pub cs: Segment,
    pub ds: Segment,
    pub es: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub ss: Segment,
    pub tr: Segment,
    pub ldt: Segment,
    pub gdt: DescriptorTable,
    pub idt: DescriptorTable,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr8: u64,
    pub efer: u64,
    pub apic_base: u64,
}

/// x87 / SSE state that boot code sets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fpu {
    pub fcw: u16,
    pub fsw: u16,
    pub ftwx: u8,
    pub mxcsr: u32,
    pub fpr: [[u8; 16]; 8],
    pub xmm: [[u8; 16]; 16],
}

/// A model-specific register and its value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Msr {
    pub index: u32,
    pub value: u64,
}

/// The entry's `index` (ECX sub-leaf) is significant.
pub const CPUID_FLAG_SIGNIFICANT_INDEX: u32 = 1;

/// One CPUID leaf (and sub-leaf) as the guest will see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidEntry {
    pub function: u32,
    pub index: u32,
    pub flags: u32,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// Local APIC register page (the architectural 1 KiB layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LapicState {
    pub regs: [u8; 1024],
}

impl Default for LapicState {
    fn default() -> Self {
        LapicState { regs: [0; 1024] }
    }
}

impl LapicState {
    /// Reads the 32-bit register at byte offset `reg`.
    pub fn get(&self, reg: usize) -> u32 {
        let b = &self.regs[reg..reg + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Writes the 32-bit register at byte offset `reg`.
    pub fn set(&mut self, reg: usize, value: u32) {
        self.regs[reg..reg + 4].copy_from_slice(&value.to_le_bytes());
    }
}

/// x86_64 parts of [`crate::Hypervisor`].
pub trait HypervisorArch {
    /// CPUID leaves the hypervisor can present to a guest (the starting point for filtering;
    /// never the host's raw CPUID).
    fn supported_cpuid(&self) -> Result<Vec<CpuidEntry>>;
}

/// Where the x86_64 interrupt controllers run. They sit at their architectural places.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IrqChipConfig {
    pub mode: IrqChipMode,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IrqChipMode {
    /// PIC, IOAPIC, LAPICs and PIT in the hypervisor.
    #[default]
    Kernel,
    /// Only the LAPICs in the hypervisor. The VMM runs the IOAPIC: it programs an MSI route per
    /// pin (GSIs below `pin_count` stay reserved for that), sends MSIs with
    /// [`crate::IrqChip::signal_msi`], and sees the guest's EOI of a level-triggered pin's
    /// vector as [`crate::VcpuExit::IoapicEoi`]. `set_irq_line` is not available. No PIT.
    Split,
}

/// x86_64 parts of [`crate::IrqChip`]: none.
pub trait IrqChipArch {}

/// x86_64 parts of [`crate::Vm`]: nothing yet beyond the common trait; the backend sets up
/// what Intel/AMD need (TSS, identity map) when the VM is created.
pub trait VmArch {}

/// x86_64 parts of [`crate::Vcpu`].
pub trait VcpuArch {
    fn get_regs(&self) -> Result<Regs>;
    fn set_regs(&self, regs: &Regs) -> Result<()>;
    fn get_sregs(&self) -> Result<Sregs>;
    fn set_sregs(&self, sregs: &Sregs) -> Result<()>;
    fn get_fpu(&self) -> Result<Fpu>;
    fn set_fpu(&self, fpu: &Fpu) -> Result<()>;
    fn set_cpuid(&self, entries: &[CpuidEntry]) -> Result<()>;
    /// Reads the MSRs whose `index` is set in `msrs`, filling `value`.
    fn get_msrs(&self, msrs: &mut [Msr]) -> Result<()>;
    fn set_msrs(&self, msrs: &[Msr]) -> Result<()>;
    fn get_lapic(&self) -> Result<LapicState>;
    fn set_lapic(&self, lapic: &LapicState) -> Result<()>;
}
