//! Initial vCPU state for the arm64 boot protocol: the boot vCPU enters the Image at EL1 with
//! the MMU off, interrupts masked and x0 pointing at the device tree. The others stay powered
//! off until the kernel starts them with PSCI CPU_ON (handled by the hypervisor).

use hypervisor::aarch64::{pstate, Reg};
use hypervisor::Vcpu;

use super::boot::BootInfo;
use crate::{Error, Result};

/// EL1h with D, A, I and F masked.
pub const BOOT_PSTATE: u64 = pstate::MODE_EL1H | pstate::D | pstate::A | pstate::I | pstate::F;

/// Sets the entry state on the boot vCPU (id 0); secondaries need nothing.
pub fn configure_vcpu(vcpu: &dyn Vcpu, boot: &BootInfo) -> Result<()> {
    if vcpu.id() != 0 {
        return Ok(());
    }
    let set = |reg, value| {
        vcpu.set_reg(reg, value).map_err(|source| Error::Vcpu {
            cpu: vcpu.id(),
            source,
        })
    };
    set(Reg::Pstate, BOOT_PSTATE)?;
    set(Reg::Pc, boot.entry)?;
    // x0 = device tree; x1..x3 are reserved and must be zero.
    set(Reg::X(0), boot.fdt_addr)?;
    for n in 1..=3 {
        set(Reg::X(n), 0)?;
    }
    Ok(())
}

/// MPIDR_EL1 of each vCPU, for the device tree's cpu nodes.
pub fn mpidrs(vcpus: &[Box<dyn Vcpu>]) -> Result<Vec<u64>> {
    vcpus
        .iter()
        .map(|v| {
            v.mpidr().map_err(|source| Error::Vcpu {
                cpu: v.id(),
                source,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_pstate_is_el1h_with_daif_masked() {
        assert_eq!(BOOT_PSTATE, 0x3c5);
    }
}
