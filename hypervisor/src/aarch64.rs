//! aarch64 register identifiers, the GIC description and the aarch64 parts of the traits, in
//! backend-neutral form.

use crate::Result;

/// A system register by its encoding (`op0, op1, CRn, CRm, op2`, as in `MRS`/`MSR`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SysReg {
    pub op0: u8,
    pub op1: u8,
    pub crn: u8,
    pub crm: u8,
    pub op2: u8,
}

impl SysReg {
    pub const fn new(op0: u8, op1: u8, crn: u8, crm: u8, op2: u8) -> Self {
        SysReg {
            op0,
            op1,
            crn,
            crm,
            op2,
        }
    }

    /// Multiprocessor affinity: the id the guest's firmware tables name a CPU by.
    pub const MPIDR_EL1: SysReg = SysReg::new(3, 0, 0, 0, 5);
}

/// A 64-bit vCPU register: a core register of the Linux arm64 `user_pt_regs` or a system
/// register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reg {
    /// General-purpose register x0..=x30.
    X(u8),
    /// Stack pointer of the current exception level (SP_EL0 in `user_pt_regs`).
    Sp,
    /// Program counter.
    Pc,
    /// Processor state (the SPSR-format PSTATE).
    Pstate,
    /// A system register.
    Sys(SysReg),
}

/// PSTATE bits the boot code uses.
pub mod pstate {
    /// Exception level 1, using SP_EL1 ("EL1h").
    pub const MODE_EL1H: u64 = 0x5;
    /// FIQ masked.
    pub const F: u64 = 1 << 6;
    /// IRQ masked.
    pub const I: u64 = 1 << 7;
    /// SError masked.
    pub const A: u64 = 1 << 8;
    /// Debug exceptions masked.
    pub const D: u64 = 1 << 9;
}

/// Where the VMM puts the GIC and how many wired interrupts it has. Addresses are guest
/// physical; which of them are used depends on the version the hypervisor can provide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqChipConfig {
    /// vCPUs the VM will have (GICv3 sizes the redistributor region by it).
    pub vcpus: u32,
    /// Shared peripheral interrupts (wired lines); GSI n is SPI n (INTID 32 + n).
    pub spis: u32,
    /// Distributor (64 KiB, both versions).
    pub dist: u64,
    /// GICv3: first redistributor; each vCPU has [`GIC_V3_REDIST_SIZE`] bytes from here.
    pub redist: u64,
    /// GICv2: the CPU interface ([`GIC_V2_CPU_SIZE`] bytes).
    pub cpu_interface: u64,
    /// GICv3: the ITS (128 KiB), if the VMM wants MSIs through one.
    pub its: Option<u64>,
}

/// Size of the GIC distributor frame.
pub const GIC_DIST_SIZE: u64 = 0x1_0000;
/// Size of one vCPU's GICv3 redistributor (RD and SGI frames).
pub const GIC_V3_REDIST_SIZE: u64 = 0x2_0000;
/// Size of the GICv2 CPU interface.
pub const GIC_V2_CPU_SIZE: u64 = 0x2000;
/// Size of the GICv3 ITS frames.
pub const GIC_V3_ITS_SIZE: u64 = 0x2_0000;
/// GICv2 supports at most this many CPUs.
pub const GIC_V2_MAX_CPUS: u32 = 8;

/// The interrupt controller the hypervisor provided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicVersion {
    /// GICv2: no MSIs (KVM emulates no GICv2m).
    V2,
    /// GICv3, with an ITS (MSIs) or without.
    V3 { its: bool },
}

/// aarch64 parts of [`crate::Hypervisor`]: none yet.
pub trait HypervisorArch {}

/// aarch64 parts of [`crate::Vm`]: none yet; vCPUs are initialised (PSCI 0.2, secondaries
/// powered off until PSCI CPU_ON) when they are created.
pub trait VmArch {}

/// aarch64 parts of [`crate::Vcpu`].
pub trait VcpuArch {
    fn get_reg(&self, reg: Reg) -> Result<u64>;
    fn set_reg(&self, reg: Reg, value: u64) -> Result<()>;

    /// MPIDR_EL1 as the hypervisor assigned it.
    fn mpidr(&self) -> Result<u64> {
        self.get_reg(Reg::Sys(SysReg::MPIDR_EL1))
    }
}

/// aarch64 parts of [`crate::IrqChip`].
pub trait IrqChipArch {
    /// Which GIC the hypervisor provided (the device tree must describe this one).
    fn gic_version(&self) -> GicVersion;
}
