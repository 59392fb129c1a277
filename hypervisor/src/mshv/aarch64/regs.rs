//! berth's neutral aarch64 registers as Hyper-V's register names, read and written with
//! the get/set VP registers hypercalls.

use mshv_bindings::*;
use mshv_ioctls::VcpuFd;

use crate::aarch64::{Reg, SysReg};
use crate::{Error, Result};

/// The system registers berth's boot code and kit may name, by their MRS encoding. Hyper-V
/// names registers by number, not by encoding, so this is a table; one missing here is
/// refused rather than guessed.
const SYSREGS: &[(SysReg, hv_register_name)] = &[
    (
        SysReg::MPIDR_EL1,
        hv_register_name_HV_ARM64_REGISTER_MPIDR_EL1,
    ),
    (
        SysReg::new(3, 0, 0, 0, 0),
        hv_register_name_HV_ARM64_REGISTER_MIDR_EL1,
    ),
    (
        SysReg::new(3, 0, 1, 0, 0),
        hv_register_name_HV_ARM64_REGISTER_SCTLR_EL1,
    ),
    (
        SysReg::new(3, 0, 1, 0, 2),
        hv_register_name_HV_ARM64_REGISTER_CPACR_EL1,
    ),
    (
        SysReg::new(3, 0, 2, 0, 0),
        hv_register_name_HV_ARM64_REGISTER_TTBR0_EL1,
    ),
    (
        SysReg::new(3, 0, 2, 0, 1),
        hv_register_name_HV_ARM64_REGISTER_TTBR1_EL1,
    ),
    (
        SysReg::new(3, 0, 2, 0, 2),
        hv_register_name_HV_ARM64_REGISTER_TCR_EL1,
    ),
    (
        SysReg::new(3, 0, 4, 0, 0),
        hv_register_name_HV_ARM64_REGISTER_SPSR_EL1,
    ),
    (
        SysReg::new(3, 0, 4, 0, 1),
        hv_register_name_HV_ARM64_REGISTER_ELR_EL1,
    ),
    (
        SysReg::new(3, 0, 4, 1, 0),
        hv_register_name_HV_ARM64_REGISTER_SP_EL0,
    ),
    (
        SysReg::new(3, 4, 4, 1, 0),
        hv_register_name_HV_ARM64_REGISTER_SP_EL1,
    ),
    (
        SysReg::new(3, 0, 5, 2, 0),
        hv_register_name_HV_ARM64_REGISTER_ESR_EL1,
    ),
    (
        SysReg::new(3, 0, 6, 0, 0),
        hv_register_name_HV_ARM64_REGISTER_FAR_EL1,
    ),
    (
        SysReg::new(3, 0, 7, 4, 0),
        hv_register_name_HV_ARM64_REGISTER_PAR_EL1,
    ),
    (
        SysReg::new(3, 0, 10, 2, 0),
        hv_register_name_HV_ARM64_REGISTER_MAIR_EL1,
    ),
    (
        SysReg::new(3, 0, 10, 3, 0),
        hv_register_name_HV_ARM64_REGISTER_AMAIR_EL1,
    ),
    (
        SysReg::new(3, 0, 12, 0, 0),
        hv_register_name_HV_ARM64_REGISTER_VBAR_EL1,
    ),
    (
        SysReg::new(3, 0, 13, 0, 1),
        hv_register_name_HV_ARM64_REGISTER_CONTEXTIDR_EL1,
    ),
    (
        SysReg::new(3, 0, 13, 0, 4),
        hv_register_name_HV_ARM64_REGISTER_TPIDR_EL1,
    ),
    (
        SysReg::new(3, 0, 14, 1, 0),
        hv_register_name_HV_ARM64_REGISTER_CNTKCTL_EL1,
    ),
    (
        SysReg::new(3, 3, 13, 0, 2),
        hv_register_name_HV_ARM64_REGISTER_TPIDR_EL0,
    ),
    (
        SysReg::new(3, 3, 13, 0, 3),
        hv_register_name_HV_ARM64_REGISTER_TPIDRRO_EL0,
    ),
];

/// Hyper-V's name for `reg`.
pub fn name(reg: Reg) -> Result<hv_register_name> {
    Ok(match reg {
        // X0..X28 are consecutive, and FP (x29) and LR (x30) follow them.
        Reg::X(n) if n <= 30 => hv_register_name_HV_ARM64_REGISTER_X0 + u32::from(n),
        Reg::X(n) => return Err(Error::InvalidArgument(format!("register x{n}"))),
        // Reg::Sp is `user_pt_regs.sp`, which is SP_EL0 (as KVM's core register is).
        Reg::Sp => hv_register_name_HV_ARM64_REGISTER_SP_EL0,
        Reg::Pc => hv_register_name_HV_ARM64_REGISTER_PC,
        Reg::Pstate => hv_register_name_HV_ARM64_REGISTER_PSTATE,
        Reg::Sys(s) => match SYSREGS.iter().find(|(r, _)| *r == s) {
            Some(&(_, n)) => n,
            None => {
                return Err(Error::InvalidArgument(format!(
                    "system register {s:?}: not in berth's MSHV register table"
                )))
            }
        },
    })
}

pub fn get_reg(fd: &VcpuFd, reg: Reg) -> Result<u64> {
    let mut assoc = [hv_register_assoc {
        name: name(reg)?,
        ..Default::default()
    }];
    fd.get_reg(&mut assoc)
        .map_err(|e| Error::ioctl("HVCALL_GET_VP_REGISTERS", e))?;
    // SAFETY: every register berth names is 64 bits; reg64 is the union's low 8 bytes,
    // plain integers whatever the hypervisor wrote.
    Ok(unsafe { assoc[0].value.reg64 })
}

/// Writes several registers in one hypercall.
pub fn set_regs(fd: &VcpuFd, values: &[(Reg, u64)]) -> Result<()> {
    let named: Vec<(hv_register_name, u64)> = values
        .iter()
        .map(|&(r, v)| Ok((name(r)?, v)))
        .collect::<Result<_>>()?;
    set(fd, &named)
}

pub fn set(fd: &VcpuFd, values: &[(hv_register_name, u64)]) -> Result<()> {
    let assoc: Vec<hv_register_assoc> = values
        .iter()
        .map(|&(name, v)| hv_register_assoc {
            name,
            value: hv_register_value { reg64: v },
            ..Default::default()
        })
        .collect();
    fd.set_reg(&assoc)
        .map_err(|e| Error::ioctl("HVCALL_SET_VP_REGISTERS", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_registers_have_hyper_v_names() {
        assert_eq!(
            name(Reg::X(0)).unwrap(),
            hv_register_name_HV_ARM64_REGISTER_X0
        );
        assert_eq!(
            name(Reg::X(29)).unwrap(),
            hv_register_name_HV_ARM64_REGISTER_FP
        );
        assert_eq!(
            name(Reg::X(30)).unwrap(),
            hv_register_name_HV_ARM64_REGISTER_LR
        );
        assert!(name(Reg::X(31)).is_err());
        assert_eq!(
            name(Reg::Pc).unwrap(),
            hv_register_name_HV_ARM64_REGISTER_PC
        );
        assert_eq!(
            name(Reg::Sys(SysReg::MPIDR_EL1)).unwrap(),
            hv_register_name_HV_ARM64_REGISTER_MPIDR_EL1
        );
        // One berth's table lacks (ICC_IAR1_EL1) is refused, not guessed.
        assert!(name(Reg::Sys(SysReg::new(3, 0, 12, 12, 0))).is_err());
    }

    #[test]
    fn stack_pointers_by_their_encodings() {
        // SP_EL0 is MSR encoding (3, 0, 4, 1, 0), SP_EL1 (3, 4, 4, 1, 0).
        assert_eq!(
            name(Reg::Sys(SysReg::new(3, 0, 4, 1, 0))).unwrap(),
            hv_register_name_HV_ARM64_REGISTER_SP_EL0
        );
        assert_eq!(
            name(Reg::Sys(SysReg::new(3, 4, 4, 1, 0))).unwrap(),
            hv_register_name_HV_ARM64_REGISTER_SP_EL1
        );
    }

    #[test]
    fn the_table_names_each_register_once() {
        for (i, (a, na)) in SYSREGS.iter().enumerate() {
            for (b, nb) in &SYSREGS[i + 1..] {
                assert!(a != b && na != nb, "{a:?} / {b:?}");
            }
        }
    }
}
