//! The aarch64 half of the MSHV backend. The GIC (v3) is the hypervisor's: the partition is
//! told where the distributor is and each VP where its redistributor is, and only then
//! initialised, so the partition is initialised when the interrupt controller is created
//! (or at the first vCPU when there is none). MMIO needs no emulator: the data-abort
//! syndrome in the intercept gives the access, as it does to KVM. PSCI is the hypervisor's;
//! SYSTEM_OFF and SYSTEM_RESET arrive as reset intercepts.
//!
//! Not yet here: MSIs (MSHV offers a GICv2m-style MSI frame at the GITS translator base,
//! which berth's device tree cannot describe yet), so PCI devices use INTx; and interrupt
//! lines are edges into an irqfd per line (no hypercall to assert an SPI in mshv-ioctls
//! 0.7.1 on arm64), which virtio's INTx tolerates because the driver reads and clears the
//! status on each interrupt.

mod intercept;
mod regs;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mshv_bindings::{
    hv_partition_property_code_HV_PARTITION_PROPERTY_GICD_BASE_ADDRESS,
    hv_partition_property_code_HV_PARTITION_PROPERTY_GIC_LPI_INT_ID_BITS,
    hv_partition_property_code_HV_PARTITION_PROPERTY_GIC_PPI_OVERFLOW_INTERRUPT_FROM_CNTV,
    hv_partition_property_code_HV_PARTITION_PROPERTY_GIC_PPI_PERFORMANCE_MONITORS_INTERRUPT,
    hv_register_name_HV_ARM64_REGISTER_GICR_BASE_GPA, mshv_user_irq_entry,
};
use mshv_ioctls::{VcpuFd, VmFd};
use vmm_sys_util::eventfd::EFD_NONBLOCK;

use super::{MshvHypervisor, MshvVm};
use crate::aarch64::{GicVersion, IrqChipConfig, Reg, GIC_V3_REDIST_SIZE};
use crate::irq::{IrqChip, IrqRoute, MsiMessage};
use crate::{Error, EventFd, IoHandler, Result, Vcpu, VcpuExit};
use intercept::{DataAbort, Intercept};

/// SPI n is INTID 32 + n.
const SPI_BASE: u32 = 32;
/// The PPIs of the virtual timer and the PMU as berth's device tree names them (PPI 11 and
/// 7, INTIDs 16 higher).
const TIMER_VIRT_INTID: u64 = 16 + 11;
const PMU_INTID: u64 = 16 + 7;
/// Why routes and signals of MSIs are refused.
const NO_MSIS: &str = "MSIs on MSHV aarch64 (berth does not describe its MSI frame yet)";

pub(super) const CAPABILITIES: crate::Capabilities = crate::Capabilities {
    irqchip_kernel: true,
    irqchip_split: false,
    readonly_memory: true,
    pio_ioeventfd: false,
    // The syndrome describes the access; there is no emulator on aarch64.
    decodes_mmio: true,
};

/// The set-up the partition waits for before it is initialised.
pub(super) struct VmState {
    inner: Mutex<SetUp>,
}

#[derive(Default)]
struct SetUp {
    initialized: bool,
    /// The first redistributor, once the GIC is placed.
    redist: Option<u64>,
}

impl VmState {
    pub(super) fn new(_fd: &VmFd) -> Result<Self> {
        Ok(VmState {
            inner: Mutex::new(SetUp::default()),
        })
    }
}

fn initialize(fd: &VmFd, s: &mut SetUp) -> Result<()> {
    if !s.initialized {
        fd.initialize()
            .map_err(|e| Error::ioctl("MSHV_INITIALIZE_PARTITION", e))?;
        s.initialized = true;
    }
    Ok(())
}

fn set_property(fd: &VmFd, code: u32, value: u64, what: &'static str) -> Result<()> {
    fd.set_partition_property(code, value)
        .map_err(|e| Error::ioctl(what, e))
}

impl crate::aarch64::HypervisorArch for MshvHypervisor {}

impl MshvVm {
    pub(super) fn arch_create_irq_chip(&self, config: &IrqChipConfig) -> Result<Arc<dyn IrqChip>> {
        let mut s = self.arch.inner.lock().unwrap_or_else(|e| e.into_inner());
        if s.initialized {
            return Err(Error::InvalidArgument(
                "the GIC must be created before the first vCPU on MSHV".into(),
            ));
        }
        let fd = &self.fd;
        set_property(
            fd,
            hv_partition_property_code_HV_PARTITION_PROPERTY_GICD_BASE_ADDRESS,
            config.dist,
            "GIC distributor address",
        )?;
        // No LPIs: without an ITS or MSI frame in the device tree nothing would use them.
        set_property(
            fd,
            hv_partition_property_code_HV_PARTITION_PROPERTY_GIC_LPI_INT_ID_BITS,
            0,
            "GIC LPI bits",
        )?;
        set_property(
            fd,
            hv_partition_property_code_HV_PARTITION_PROPERTY_GIC_PPI_OVERFLOW_INTERRUPT_FROM_CNTV,
            TIMER_VIRT_INTID,
            "virtual timer interrupt",
        )?;
        set_property(
            fd,
            hv_partition_property_code_HV_PARTITION_PROPERTY_GIC_PPI_PERFORMANCE_MONITORS_INTERRUPT,
            PMU_INTID,
            "PMU interrupt",
        )?;
        initialize(fd, &mut s)?;
        s.redist = Some(config.redist);
        Ok(Arc::new(MshvIrqChip {
            vm: self.fd.clone(),
            spis: config.spis,
            lines: Mutex::new(HashMap::new()),
        }))
    }

    pub(super) fn arch_create_vcpu(&self, id: u32, index: u8) -> Result<Box<dyn Vcpu>> {
        let mut s = self.arch.inner.lock().unwrap_or_else(|e| e.into_inner());
        initialize(&self.fd, &mut s)?;
        let fd = self
            .fd
            .create_vcpu(index)
            .map_err(|e| Error::ioctl("MSHV_CREATE_VP", e))?;
        if let Some(redist) = s.redist {
            // Each VP's redistributor frames follow the one before, as the device tree's
            // single redistributor region says.
            let gicr = redist + u64::from(id) * GIC_V3_REDIST_SIZE;
            regs::set(
                &fd,
                &[(hv_register_name_HV_ARM64_REGISTER_GICR_BASE_GPA, gicr)],
            )?;
        }
        Ok(Box::new(MshvVcpu { id, fd }))
    }
}

/// The hypervisor's GICv3: wired lines are SPIs routed by GSI.
pub struct MshvIrqChip {
    vm: Arc<VmFd>,
    spis: u32,
    /// The irqfd that raises each line `set_irq_line` was asked to drive.
    lines: Mutex<HashMap<u32, EventFd>>,
}

impl MshvIrqChip {
    /// GSI n to SPI n, for every line: the table irqfds on wired lines go through.
    fn pin_routes(&self) -> Vec<mshv_user_irq_entry> {
        (0..self.spis).map(|gsi| spi_route(gsi, gsi)).collect()
    }
}

/// A route from `gsi` to SPI `pin`: on arm64 the entry's data is the INTID.
fn spi_route(gsi: u32, pin: u32) -> mshv_user_irq_entry {
    mshv_user_irq_entry {
        gsi,
        data: SPI_BASE + pin,
        ..Default::default()
    }
}

impl IrqChip for MshvIrqChip {
    fn pin_count(&self) -> u32 {
        self.spis
    }

    fn set_irq_line(&self, gsi: u32, level: bool) -> Result<()> {
        if gsi >= self.spis {
            return Err(Error::InvalidArgument(format!(
                "GSI {gsi}: the GIC has {} wired lines",
                self.spis
            )));
        }
        // A rising level is an edge into the line's irqfd; a falling one has nothing to do.
        if !level {
            return Ok(());
        }
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        let evt = match lines.entry(gsi) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let evt = EventFd::new(EFD_NONBLOCK)
                    .map_err(|e| Error::ioctl("eventfd for an interrupt line", e))?;
                super::register_irqfd(&self.vm, &evt, gsi)?;
                v.insert(evt)
            }
        };
        evt.write(1)
            .map_err(|e| Error::ioctl("interrupt line eventfd", e))
    }

    fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<()> {
        super::register_irqfd(&self.vm, evt, gsi)
    }

    fn unregister_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<()> {
        super::unregister_irqfd(&self.vm, evt, gsi)
    }

    fn set_msi_routes(&self, routes: &[IrqRoute]) -> Result<()> {
        // The table replaces the whole routing: restate the wired lines.
        let mut entries = self.pin_routes();
        for r in routes {
            match *r {
                IrqRoute::Pin { gsi, pin } => entries.push(spi_route(gsi, pin)),
                IrqRoute::Msi { .. } => return Err(Error::Unsupported(NO_MSIS)),
            }
        }
        super::set_routing(&self.vm, &entries)
    }

    fn signal_msi(&self, _msi: MsiMessage) -> Result<()> {
        Err(Error::Unsupported(NO_MSIS))
    }

    fn finalize(&self) -> Result<()> {
        super::set_routing(&self.vm, &self.pin_routes())
    }
}

impl crate::aarch64::IrqChipArch for MshvIrqChip {
    fn gic_version(&self) -> GicVersion {
        GicVersion::V3 { its: false }
    }
}

/// An MSHV virtual processor.
pub struct MshvVcpu {
    id: u32,
    fd: VcpuFd,
}

impl MshvVcpu {
    /// Carries out the load or store the syndrome describes and steps over it.
    fn mmio(&self, gpa: u64, pc: u64, a: DataAbort, io: &dyn IoHandler) -> Result<()> {
        let next = (Reg::Pc, pc.wrapping_add(a.length));
        if a.write {
            // Register 31 is the zero register in a store's Rt.
            let value = if a.reg == 31 {
                0
            } else {
                regs::get_reg(&self.fd, Reg::X(a.reg))?
            };
            io.mmio_write(gpa, &value.to_le_bytes()[..a.size]);
            return regs::set_regs(&self.fd, &[next]);
        }
        let mut data = [0u8; 8];
        io.mmio_read(gpa, &mut data[..a.size]);
        let value = a.loaded(u64::from_le_bytes(data));
        if a.reg == 31 {
            regs::set_regs(&self.fd, &[next])
        } else {
            regs::set_regs(&self.fd, &[(Reg::X(a.reg), value), next])
        }
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
            Intercept::Memory {
                gpa,
                pc,
                access: Some(a),
            } => {
                self.mmio(gpa, pc, a, io)?;
                VcpuExit::Io
            }
            Intercept::Memory {
                gpa,
                pc,
                access: None,
            } => VcpuExit::Unhandled {
                what: format!(
                    "an MMIO access at {gpa:#x} (pc {pc:#x}) whose syndrome does not describe it"
                ),
            },
            Intercept::System(e) => VcpuExit::System(e),
            Intercept::Unrecoverable => VcpuExit::Shutdown,
            Intercept::OtherReset(t) => VcpuExit::Unhandled {
                what: format!("MSHV reset intercept of type {t}"),
            },
            Intercept::Other(kind) => VcpuExit::Unhandled {
                what: format!("MSHV message {kind:#x}"),
            },
        })
    }
}

impl crate::aarch64::VcpuArch for MshvVcpu {
    fn get_reg(&self, reg: Reg) -> Result<u64> {
        regs::get_reg(&self.fd, reg)
    }

    fn set_reg(&self, reg: Reg, value: u64) -> Result<()> {
        regs::set_regs(&self.fd, &[(reg, value)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wired_lines_route_to_their_spis() {
        let r = spi_route(5, 5);
        assert_eq!((r.gsi, r.data, r.address_lo, r.address_hi), (5, 37, 0, 0));
    }
}
