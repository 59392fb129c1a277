//! aarch64 half of the KVM backend: vCPU initialisation, register access through one_reg, the
//! vGIC (v3, with an ITS when KVM has one, else v2) and the aarch64 KVM_IRQ_LINE numbering.

use kvm_bindings::{
    kvm_create_device, kvm_device_attr, kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_ITS,
    kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V2, kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3,
    kvm_irq_routing_entry, kvm_vcpu_init, user_pt_regs, KVM_ARM_IRQ_TYPE_SHIFT,
    KVM_ARM_IRQ_TYPE_SPI, KVM_ARM_VCPU_POWER_OFF, KVM_ARM_VCPU_PSCI_0_2,
    KVM_DEV_ARM_VGIC_CTRL_INIT, KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_DEV_ARM_VGIC_GRP_CTRL,
    KVM_DEV_ARM_VGIC_GRP_NR_IRQS, KVM_IRQ_ROUTING_IRQCHIP, KVM_REG_ARM64, KVM_REG_ARM64_SYSREG,
    KVM_REG_ARM64_SYSREG_CRM_SHIFT, KVM_REG_ARM64_SYSREG_CRN_SHIFT, KVM_REG_ARM64_SYSREG_OP0_SHIFT,
    KVM_REG_ARM64_SYSREG_OP1_SHIFT, KVM_REG_ARM64_SYSREG_OP2_SHIFT, KVM_REG_ARM_CORE,
    KVM_REG_SIZE_U64, KVM_VGIC_ITS_ADDR_TYPE, KVM_VGIC_V2_ADDR_TYPE_CPU,
    KVM_VGIC_V2_ADDR_TYPE_DIST, KVM_VGIC_V3_ADDR_TYPE_DIST, KVM_VGIC_V3_ADDR_TYPE_REDIST,
};
use kvm_ioctls::{DeviceFd, VcpuFd, VmFd};

use super::{KvmHypervisor, KvmIrqChip, KvmVcpu, KvmVm};
use crate::aarch64::{
    GicVersion, HypervisorArch, IrqChipArch, IrqChipConfig, Reg, SysReg, VcpuArch, VmArch,
    GIC_V2_MAX_CPUS,
};
use crate::{Error, Result};

/// SPI n is INTID 32 + n (INTIDs below are SGIs and PPIs).
const SPI_BASE: u32 = 32;

impl KvmVm {
    pub(super) fn arch_setup(&self) -> Result<()> {
        Ok(())
    }

    /// KVM_ARM_VCPU_INIT with the host's preferred target: PSCI 0.2 (CPU_ON, SYSTEM_OFF and
    /// SYSTEM_RESET handled or reported by KVM), secondaries off until the guest starts them.
    pub(super) fn arch_init_vcpu(&self, vcpu: &VcpuFd, id: u32) -> Result<()> {
        let mut kvi = kvm_vcpu_init::default();
        self.fd
            .get_preferred_target(&mut kvi)
            .map_err(|e| Error::ioctl("KVM_ARM_PREFERRED_TARGET", e))?;
        kvi.features[0] |= 1 << KVM_ARM_VCPU_PSCI_0_2;
        if id > 0 {
            kvi.features[0] |= 1 << KVM_ARM_VCPU_POWER_OFF;
        }
        vcpu.vcpu_init(&kvi)
            .map_err(|e| Error::ioctl("KVM_ARM_VCPU_INIT", e))
    }

    /// A GICv3 when the host can emulate one, else a GICv2 (hosts whose GIC has no
    /// virtualisation support for v3, such as GICv2-only boards), saying why.
    pub(super) fn arch_create_irq_chip(&self, config: &IrqChipConfig) -> Result<ArchIrqChip> {
        match create_gic_v3(&self.fd, config) {
            Ok(chip) => Ok(chip),
            Err(e) => {
                if config.vcpus > GIC_V2_MAX_CPUS {
                    return Err(Error::InvalidArgument(format!(
                        "this host cannot provide a GICv3 ({e}) and a GICv2 serves at most \
                         {GIC_V2_MAX_CPUS} vCPUs, not {}",
                        config.vcpus
                    )));
                }
                log::info!("the host cannot provide a GICv3 ({e}); using a GICv2 (no MSIs)");
                create_gic_v2(&self.fd, config)
            }
        }
    }
}

impl VmArch for KvmVm {}

impl HypervisorArch for KvmHypervisor {}

fn create_device(vm: &VmFd, type_: u32, what: &'static str) -> Result<DeviceFd> {
    let mut dev = kvm_create_device {
        type_,
        fd: 0,
        flags: 0,
    };
    vm.create_device(&mut dev)
        .map_err(|e| Error::ioctl(what, e))
}

/// Sets device attribute `group`/`attr` to the value behind `value` (u32 or u64, as the
/// attribute defines it).
fn set_attr<T>(
    dev: &DeviceFd,
    group: u32,
    attr: u64,
    value: Option<&T>,
    what: &'static str,
) -> Result<()> {
    let a = kvm_device_attr {
        flags: 0,
        group,
        attr,
        addr: value.map_or(0, |v| v as *const T as u64),
    };
    dev.set_device_attr(&a).map_err(|e| Error::ioctl(what, e))
}

fn nr_irqs(config: &IrqChipConfig) -> u32 {
    SPI_BASE + config.spis
}

fn create_gic_v3(vm: &VmFd, config: &IrqChipConfig) -> Result<ArchIrqChip> {
    let gic = create_device(
        vm,
        kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3,
        "KVM_CREATE_DEVICE (GICv3)",
    )?;
    set_attr(
        &gic,
        KVM_DEV_ARM_VGIC_GRP_ADDR,
        KVM_VGIC_V3_ADDR_TYPE_DIST.into(),
        Some(&config.dist),
        "GICv3 distributor address",
    )?;
    // One redistributor region; KVM sizes it by the number of vCPUs at initialisation.
    set_attr(
        &gic,
        KVM_DEV_ARM_VGIC_GRP_ADDR,
        KVM_VGIC_V3_ADDR_TYPE_REDIST.into(),
        Some(&config.redist),
        "GICv3 redistributor address",
    )?;
    set_attr(
        &gic,
        KVM_DEV_ARM_VGIC_GRP_NR_IRQS,
        0,
        Some(&nr_irqs(config)),
        "GICv3 interrupt count",
    )?;
    let its = match config.its {
        Some(addr) => match create_its(vm, addr) {
            Ok(its) => Some(its),
            Err(e) => {
                log::info!("no GICv3 ITS ({e}): PCI devices get no MSIs");
                None
            }
        },
        None => None,
    };
    Ok(ArchIrqChip {
        version: GicVersion::V3 { its: its.is_some() },
        spis: config.spis,
        gic,
        its,
    })
}

fn create_its(vm: &VmFd, addr: u64) -> Result<DeviceFd> {
    let its = create_device(
        vm,
        kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_ITS,
        "KVM_CREATE_DEVICE (ITS)",
    )?;
    set_attr(
        &its,
        KVM_DEV_ARM_VGIC_GRP_ADDR,
        KVM_VGIC_ITS_ADDR_TYPE.into(),
        Some(&addr),
        "ITS address",
    )?;
    Ok(its)
}

fn create_gic_v2(vm: &VmFd, config: &IrqChipConfig) -> Result<ArchIrqChip> {
    let gic = create_device(
        vm,
        kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V2,
        "KVM_CREATE_DEVICE (GICv2)",
    )?;
    set_attr(
        &gic,
        KVM_DEV_ARM_VGIC_GRP_ADDR,
        KVM_VGIC_V2_ADDR_TYPE_DIST.into(),
        Some(&config.dist),
        "GICv2 distributor address",
    )?;
    set_attr(
        &gic,
        KVM_DEV_ARM_VGIC_GRP_ADDR,
        KVM_VGIC_V2_ADDR_TYPE_CPU.into(),
        Some(&config.cpu_interface),
        "GICv2 CPU interface address",
    )?;
    set_attr(
        &gic,
        KVM_DEV_ARM_VGIC_GRP_NR_IRQS,
        0,
        Some(&nr_irqs(config)),
        "GICv2 interrupt count",
    )?;
    Ok(ArchIrqChip {
        version: GicVersion::V2,
        spis: config.spis,
        gic,
        its: None,
    })
}

/// The aarch64 half of [`KvmIrqChip`]: the vGIC device (and ITS) and the SPI count.
pub(super) struct ArchIrqChip {
    version: GicVersion,
    spis: u32,
    gic: DeviceFd,
    its: Option<DeviceFd>,
}

impl ArchIrqChip {
    pub(super) fn pin_count(&self) -> u32 {
        self.spis
    }

    /// KVM_IRQ_LINE on aarch64 encodes the interrupt type and INTID: GSI n is SPI n.
    pub(super) fn irq_line_number(&self, gsi: u32) -> Result<u32> {
        if gsi >= self.spis {
            return Err(Error::InvalidArgument(format!(
                "GSI {gsi}: the GIC has {} wired lines",
                self.spis
            )));
        }
        Ok((KVM_ARM_IRQ_TYPE_SPI << KVM_ARM_IRQ_TYPE_SHIFT) | (SPI_BASE + gsi))
    }

    /// KVM's default table on aarch64: GSI n to pin n (SPI n) of irqchip 0.
    pub(super) fn pin_routes(&self) -> Vec<kvm_irq_routing_entry> {
        (0..self.spis)
            .map(|gsi| {
                let mut e = kvm_irq_routing_entry {
                    gsi,
                    type_: KVM_IRQ_ROUTING_IRQCHIP,
                    ..Default::default()
                };
                e.u.irqchip.irqchip = 0;
                e.u.irqchip.pin = gsi;
                e
            })
            .collect()
    }

    pub(super) fn irqchip_for(&self, _pin: u32) -> u32 {
        0
    }

    /// Initialises the GIC (every vCPU must exist) and then the ITS.
    pub(super) fn finalize(&self) -> Result<()> {
        set_attr::<u64>(
            &self.gic,
            KVM_DEV_ARM_VGIC_GRP_CTRL,
            KVM_DEV_ARM_VGIC_CTRL_INIT.into(),
            None,
            "GIC initialisation",
        )?;
        if let Some(its) = &self.its {
            set_attr::<u64>(
                its,
                KVM_DEV_ARM_VGIC_GRP_CTRL,
                KVM_DEV_ARM_VGIC_CTRL_INIT.into(),
                None,
                "ITS initialisation",
            )?;
        }
        Ok(())
    }
}

impl IrqChipArch for KvmIrqChip {
    fn gic_version(&self) -> GicVersion {
        self.arch.version
    }
}

/// The one_reg id of `reg`.
fn reg_id(reg: Reg) -> Result<u64> {
    let core = |offset: usize| {
        // Core register ids count the offset in `struct kvm_regs` in 32-bit words; `user_pt_regs`
        // is its first member.
        KVM_REG_ARM64 | KVM_REG_SIZE_U64 | u64::from(KVM_REG_ARM_CORE) | (offset / 4) as u64
    };
    Ok(match reg {
        Reg::X(n) if n <= 30 => core(std::mem::offset_of!(user_pt_regs, regs) + 8 * usize::from(n)),
        Reg::X(n) => return Err(Error::InvalidArgument(format!("register x{n}"))),
        Reg::Sp => core(std::mem::offset_of!(user_pt_regs, sp)),
        Reg::Pc => core(std::mem::offset_of!(user_pt_regs, pc)),
        Reg::Pstate => core(std::mem::offset_of!(user_pt_regs, pstate)),
        Reg::Sys(SysReg {
            op0,
            op1,
            crn,
            crm,
            op2,
        }) => {
            KVM_REG_ARM64
                | KVM_REG_SIZE_U64
                | u64::from(KVM_REG_ARM64_SYSREG)
                | u64::from(op0) << KVM_REG_ARM64_SYSREG_OP0_SHIFT
                | u64::from(op1) << KVM_REG_ARM64_SYSREG_OP1_SHIFT
                | u64::from(crn) << KVM_REG_ARM64_SYSREG_CRN_SHIFT
                | u64::from(crm) << KVM_REG_ARM64_SYSREG_CRM_SHIFT
                | u64::from(op2) << KVM_REG_ARM64_SYSREG_OP2_SHIFT
        }
    })
}

impl VcpuArch for KvmVcpu {
    fn get_reg(&self, reg: Reg) -> Result<u64> {
        let mut bytes = [0u8; 8];
        self.fd
            .get_one_reg(reg_id(reg)?, &mut bytes)
            .map_err(|e| Error::ioctl("KVM_GET_ONE_REG", e))?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn set_reg(&self, reg: Reg, value: u64) -> Result<()> {
        self.fd
            .set_one_reg(reg_id(reg)?, &value.to_le_bytes())
            .map(|_| ())
            .map_err(|e| Error::ioctl("KVM_SET_ONE_REG", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_register_ids_match_the_kernel_abi() {
        // Values from the arm64 KVM documentation: x0 = 0x6030_0000_0010_0000, pc = regs[32].
        assert_eq!(reg_id(Reg::X(0)).unwrap(), 0x6030_0000_0010_0000);
        assert_eq!(reg_id(Reg::X(1)).unwrap(), 0x6030_0000_0010_0002);
        assert_eq!(reg_id(Reg::Pc).unwrap(), 0x6030_0000_0010_0040);
        assert_eq!(reg_id(Reg::Pstate).unwrap(), 0x6030_0000_0010_0042);
        assert!(reg_id(Reg::X(31)).is_err());
    }

    #[test]
    fn mpidr_id_is_the_documented_sysreg_encoding() {
        // ARM64_SYS_REG(3, 0, 0, 0, 5)
        assert_eq!(
            reg_id(Reg::Sys(SysReg::MPIDR_EL1)).unwrap(),
            0x6030_0000_0013_c005
        );
    }
}
