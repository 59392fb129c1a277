//! x86_64: platform devices on the port and MMIO buses, ACPI tables, kernel loading and vCPU
//! state.

use std::io::Write;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arch::x86_64::acpi;
use arch::x86_64::boot::{BootInfo, BootSource};
use arch::x86_64::layout::{
    pci_mmio64, BOOT_TIMER_SIZE, BOOT_TIMER_START, PCI_ECAM_SIZE, PCI_ECAM_START, PCI_MMIO32_SIZE,
    PCI_MMIO32_START,
};
use arch::GuestMemory;
use devices::irqchip::{IOAPIC_BASE, IOAPIC_SIZE};
use devices::legacy::{sink::X86_PROBED_PORTS, AcpiPm, BootTimer, Cmos, PvPanic, Sink, I8042};
use devices::{Bus, Trigger};
use hypervisor::arch::{CpuidEntry, IrqChipConfig, IrqChipMode};
use hypervisor::{Hypervisor, IrqChip, SystemEvent, Vcpu};

use super::{insert, serial, GuestFiles, PciLayout, Platform};
use crate::cli::IrqchipChoice;
use crate::error::Result;
use crate::events::VmEvent;
use crate::interrupts::Interrupts;

pub use arch::x86_64::layout::{ram_ranges, MIN_MEMORY};

/// x86 APIC ids are 8 bits without x2APIC in the MADT.
pub const MAX_CPUS: u32 = 255;

pub const DEFAULT_CMDLINE: &str =
    "console=ttyS0 reboot=k panic=1 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd";

const COM1_PORT: u64 = 0x3f8;
const COM1_IRQ: u32 = 4;
const I8042_PORT: u64 = 0x60;
const I8042_IRQ: u32 = 1;
const CMOS_PORT: u64 = 0x70;
const PCI_CONFIG_PORT: u64 = 0xcf8;
const PCI_CONFIG_PORT_LEN: u64 = 8;

/// Sends a VM event when a device fires (the i8042's reset line, the ACPI PM block).
struct EventTrigger {
    tx: Mutex<Sender<VmEvent>>,
    event: VmEvent,
}

impl Trigger for EventTrigger {
    type E = String;

    fn trigger(&self) -> std::result::Result<(), String> {
        devices::bus::lock(&self.tx)
            .send(self.event.clone())
            .map_err(|e| e.to_string())
    }
}

/// The PIC/IOAPIC/LAPIC need no placement; split mode leaves the IOAPIC to berth and has no
/// PIC or PIT (Linux finds none and uses the LAPIC timer, with kvmclock for calibration).
pub fn irq_chip_config(_cpus: u32, choice: IrqchipChoice) -> Result<IrqChipConfig> {
    let mode = match choice {
        IrqchipChoice::Kernel => IrqChipMode::Kernel,
        IrqchipChoice::Split => IrqChipMode::Split,
    };
    Ok(IrqChipConfig { mode })
}

pub fn interrupts(irqchip: Arc<dyn IrqChip>, choice: IrqchipChoice) -> Interrupts {
    match choice {
        IrqchipChoice::Kernel => Interrupts::in_kernel(irqchip),
        IrqchipChoice::Split => Interrupts::split(irqchip),
    }
}

pub fn pci_layout(mem_size: u64, _irqchip: &dyn IrqChip) -> PciLayout {
    PciLayout {
        ecam: (PCI_ECAM_START, PCI_ECAM_SIZE),
        config_ports: Some((PCI_CONFIG_PORT, PCI_CONFIG_PORT_LEN)),
        mmio32: (PCI_MMIO32_START, PCI_MMIO32_SIZE),
        mmio64: pci_mmio64(mem_size),
        intx_gsi: acpi::pci_intx_gsi,
        msi_devid: false,
    }
}

pub fn build_devices(
    interrupts: &Interrupts,
    serial_out: Box<dyn Write + Send>,
    boot_timer: bool,
    start: Instant,
    events: Sender<VmEvent>,
) -> Result<Platform> {
    let mut pio = Bus::new();
    let mut mmio = Bus::new();

    let (serial, drained) = serial(interrupts, COM1_IRQ, serial_out)?;
    insert(&mut pio, serial.clone(), COM1_PORT, 8)?;

    let trigger = |ev| EventTrigger {
        tx: Mutex::new(events.clone()),
        event: VmEvent::System(ev),
    };
    let i8042 = I8042::new(
        trigger(SystemEvent::Reset),
        interrupts.edge_line(I8042_IRQ)?,
    );
    insert(&mut pio, Arc::new(Mutex::new(i8042)), I8042_PORT, 5)?;
    insert(
        &mut pio,
        Arc::new(Mutex::new(Cmos::default())),
        CMOS_PORT,
        2,
    )?;
    let pm = AcpiPm::new(
        trigger(SystemEvent::PowerOff),
        trigger(SystemEvent::Reset),
        acpi::S5_SLEEP_TYPE,
        acpi::RESET_VALUE,
    );
    insert(
        &mut pio,
        Arc::new(Mutex::new(pm)),
        acpi::PM_PORT.into(),
        acpi::PM_LEN.into(),
    )?;
    let pvpanic = PvPanic::new(trigger(SystemEvent::Crash));
    insert(
        &mut pio,
        Arc::new(Mutex::new(pvpanic)),
        acpi::PVPANIC_PORT.into(),
        1,
    )?;
    let sink: Arc<dyn devices::bus::BusAccess> = Arc::new(Mutex::new(Sink));
    for &(base, len) in X86_PROBED_PORTS {
        insert(&mut pio, sink.clone(), base, len)?;
    }

    if boot_timer {
        let timer = Arc::new(Mutex::new(BootTimer::new(start)));
        insert(&mut mmio, timer, BOOT_TIMER_START, BOOT_TIMER_SIZE)?;
    }
    if let Some(ioapic) = interrupts.ioapic() {
        insert(&mut mmio, ioapic, IOAPIC_BASE, IOAPIC_SIZE)?;
    }

    Ok(Platform {
        pio,
        mmio,
        serial,
        serial_drained: drained,
    })
}

/// What the vCPUs start from.
pub struct Boot {
    info: BootInfo,
    cpuid: Vec<CpuidEntry>,
    cpus: u32,
}

/// Writes the ACPI tables and loads the kernel, initrd and command line.
pub fn load_guest(
    hv: &dyn Hypervisor,
    mem: &GuestMemory,
    mem_size: u64,
    cpus: u32,
    files: GuestFiles<'_>,
) -> Result<Boot> {
    let cpuid = hv.supported_cpuid()?;
    let rsdp = acpi::write_tables(mem, cpus, mem_size)?;
    let info = arch::x86_64::load_kernel(
        mem,
        mem_size,
        BootSource {
            kernel: files.kernel,
            kernel_name: files.kernel_name,
            initrd: files.initrd,
            cmdline: files.cmdline,
            acpi_rsdp: Some(rsdp),
        },
    )?;
    arch::x86_64::vcpu::write_descriptor_tables(mem)?;
    arch::x86_64::vcpu::write_reset_vector(mem)?;
    log::debug!(
        "{:?} kernel, {:?} entry at {:#x}, initrd {:x?}",
        info.image,
        info.protocol,
        info.entry,
        info.initrd
    );
    Ok(Boot { info, cpuid, cpus })
}

/// CPUID, MSRs, LAPIC and, on vCPU 0, the entry state.
pub fn configure_vcpus(
    vcpus: &[Box<dyn Vcpu>],
    mem: &GuestMemory,
    boot: &Boot,
    _irqchip: &dyn IrqChip,
) -> Result<()> {
    for vcpu in vcpus {
        arch::x86_64::configure_vcpu(&**vcpu, mem, &boot.info, &boot.cpuid, boot.cpus)?;
    }
    Ok(())
}

/// A triple fault resets the guest like a requested reset; the state says why, for debugging.
pub fn log_shutdown(vcpu: &dyn Vcpu) {
    match (vcpu.get_regs(), vcpu.get_sregs()) {
        (Ok(r), Ok(s)) => log::debug!(
            "vCPU {} shut down (triple fault): rip {:#x} rsp {:#x} cs {:#x}/{:#x} cr0 {:#x} cr3 {:#x}",
            vcpu.id(),
            r.rip,
            r.rsp,
            s.cs.selector,
            s.cs.base,
            s.cr0,
            s.cr3
        ),
        _ => log::debug!("vCPU {} shut down (triple fault)", vcpu.id()),
    }
}
