//! aarch64: platform devices on the MMIO bus, kernel loading, the device tree and vCPU state.
//! PSCI SYSTEM_OFF / SYSTEM_RESET reach the control loop as system-event exits.

use std::io::Write;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arch::aarch64::boot::{BootInfo, BootSource};
use arch::aarch64::fdt::FdtConfig;
use arch::aarch64::layout::{
    pci_mmio64, BOOT_TIMER_SIZE, BOOT_TIMER_START, PCI_ECAM_SIZE, PCI_ECAM_START, PCI_MMIO32_SIZE,
    PCI_MMIO32_START, RTC_SIZE, RTC_START, UART_SPI, UART_START,
};
use arch::GuestMemory;
use devices::legacy::{BootTimer, RtcPl031};
use devices::Bus;
use hypervisor::arch::{GicVersion, IrqChipConfig};
use hypervisor::{Hypervisor, IrqChip, Vcpu};

use super::{insert, serial, GuestFiles, PciLayout, Platform};
use crate::cli::IrqchipChoice;
use crate::error::{Error, Result};
use crate::events::VmEvent;
use crate::interrupts::Interrupts;

pub use arch::aarch64::layout::{ram_ranges, MAX_CPUS, MIN_MEMORY};

/// No i8042 or ACPI reboot here: PSCI resets; `panic=1` turns a panic into a reset.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 panic=1";

/// The 16550's eight byte-wide registers (reg-shift 0).
const UART_REGS: u64 = 8;

/// The GIC is always the hypervisor's: there is no split mode here.
pub fn irq_chip_config(cpus: u32, choice: IrqchipChoice) -> Result<IrqChipConfig> {
    match choice {
        IrqchipChoice::Kernel => Ok(arch::aarch64::layout::irq_chip_config(cpus)),
        IrqchipChoice::Split => Err(Error::SplitIrqchipUnsupported),
    }
}

pub fn interrupts(irqchip: Arc<dyn IrqChip>, _choice: IrqchipChoice) -> Interrupts {
    Interrupts::in_kernel(irqchip)
}

pub fn pci_layout(mem_size: u64, irqchip: &dyn IrqChip) -> PciLayout {
    // Without an ITS (a GICv2, or a GICv3 without one) the device tree has no msi-map and
    // Linux uses INTx.
    let its = irqchip.gic_version() == (GicVersion::V3 { its: true });
    PciLayout {
        ecam: (PCI_ECAM_START, PCI_ECAM_SIZE),
        config_ports: None,
        mmio32: (PCI_MMIO32_START, PCI_MMIO32_SIZE),
        mmio64: pci_mmio64(mem_size),
        intx_gsi: arch::aarch64::layout::pci_intx_spi,
        msi_devid: its,
    }
}

pub fn build_devices(
    interrupts: &Interrupts,
    serial_out: Box<dyn Write + Send>,
    boot_timer: bool,
    start: Instant,
    _events: Sender<VmEvent>,
) -> Result<Platform> {
    let mut mmio = Bus::new();
    let (serial, drained) = serial(interrupts, UART_SPI, serial_out)?;
    insert(&mut mmio, serial.clone(), UART_START, UART_REGS)?;
    insert(
        &mut mmio,
        Arc::new(Mutex::new(RtcPl031::default())),
        RTC_START,
        RTC_SIZE,
    )?;
    if boot_timer {
        let timer = Arc::new(Mutex::new(BootTimer::new(start)));
        insert(&mut mmio, timer, BOOT_TIMER_START, BOOT_TIMER_SIZE)?;
    }
    Ok(Platform {
        pio: Bus::new(),
        mmio,
        serial,
        serial_drained: drained,
    })
}

/// What the vCPUs start from; the device tree is written with them, once their MPIDRs are known.
pub struct Boot {
    info: BootInfo,
    mem_size: u64,
}

/// Loads the kernel Image and the initrd.
pub fn load_guest(
    _hv: &dyn Hypervisor,
    mem: &GuestMemory,
    mem_size: u64,
    _cpus: u32,
    files: GuestFiles<'_>,
) -> Result<Boot> {
    let info = arch::aarch64::load_kernel(
        mem,
        mem_size,
        BootSource {
            kernel: files.kernel,
            kernel_name: files.kernel_name,
            initrd: files.initrd,
            cmdline: files.cmdline,
        },
    )?;
    log::debug!(
        "Image entry at {:#x}, initrd {:x?}, device tree at {:#x}",
        info.entry,
        info.initrd,
        info.fdt_addr
    );
    Ok(Boot { info, mem_size })
}

/// Writes the device tree (CPUs by MPIDR, the GIC the hypervisor gave) and the boot vCPU's
/// entry state.
pub fn configure_vcpus(
    vcpus: &[Box<dyn Vcpu>],
    mem: &GuestMemory,
    boot: &Boot,
    irqchip: &dyn IrqChip,
) -> Result<()> {
    let mpidrs = arch::aarch64::mpidrs(vcpus)?;
    let fdt = FdtConfig {
        mpidrs: &mpidrs,
        mem_size: boot.mem_size,
        cmdline: &boot.info.cmdline,
        initrd: boot.info.initrd,
        gic: irqchip.gic_version(),
        rtc: true,
        pci_mmio64: pci_mmio64(boot.mem_size),
    };
    arch::aarch64::write_fdt(mem, &boot.info, &fdt)?;
    for vcpu in vcpus {
        arch::aarch64::configure_vcpu(&**vcpu, &boot.info)?;
    }
    Ok(())
}

/// A vCPU that shut down on its own (KVM reports none on aarch64; PSCI events come as system
/// events): the PC says where, for debugging.
pub fn log_shutdown(vcpu: &dyn Vcpu) {
    match vcpu.get_reg(hypervisor::arch::Reg::Pc) {
        Ok(pc) => log::debug!("vCPU {} shut down: pc {pc:#x}", vcpu.id()),
        Err(_) => log::debug!("vCPU {} shut down", vcpu.id()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_irqchip_is_refused_in_one_line_that_names_the_fix() {
        let err = irq_chip_config(1, IrqchipChoice::Split)
            .unwrap_err()
            .to_string();
        assert!(err.contains("use --irqchip kernel"), "{err}");
        assert!(!err.contains('\n'));
        assert!(irq_chip_config(1, IrqchipChoice::Kernel).is_ok());
    }
}
