//! x86_64 platform devices and where they sit on the buses.

use std::io::Write;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arch::x86_64::acpi;
use arch::x86_64::layout::{BOOT_TIMER_SIZE, BOOT_TIMER_START};
use devices::legacy::{
    sink::X86_PROBED_PORTS, AcpiPm, BootTimer, Cmos, PvPanic, Serial, Sink, I8042,
};
use devices::{Bus, BusDevice, EventFd, EventFdTrigger, Trigger};
use hypervisor::{IrqChip, SystemEvent};
use vmm_sys_util::eventfd::EFD_NONBLOCK;

use crate::error::{Error, Result};
use crate::vm::VmEvent;

const COM1_PORT: u64 = 0x3f8;
const COM1_IRQ: u32 = 4;
const I8042_PORT: u64 = 0x60;
const I8042_IRQ: u32 = 1;
const CMOS_PORT: u64 = 0x70;

/// The buses vCPU exits dispatch to (still open for more devices), and the console the VMM
/// feeds.
pub struct Platform {
    pub pio: Bus,
    pub mmio: Bus,
    pub serial: Arc<Mutex<Serial>>,
    /// Signalled when the guest drains the UART's receive FIFO.
    pub serial_drained: EventFd,
}

/// Sends a VM event when a device fires (the i8042's reset line).
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

fn irq_line(irqchip: &dyn IrqChip, gsi: u32) -> Result<EventFdTrigger> {
    let evt = EventFd::new(EFD_NONBLOCK).map_err(|e| Error::Device(format!("eventfd: {e}")))?;
    irqchip.register_irqfd(&evt, gsi)?;
    Ok(EventFdTrigger::new(evt))
}

fn insert(bus: &mut Bus, dev: Arc<Mutex<dyn BusDevice>>, base: u64, len: u64) -> Result<()> {
    bus.insert(dev, base, len)
        .map_err(|e| Error::Device(e.to_string()))
}

pub fn build(
    irqchip: &dyn IrqChip,
    serial_out: Box<dyn Write + Send>,
    boot_timer: bool,
    start: Instant,
    events: Sender<VmEvent>,
) -> Result<Platform> {
    let mut pio = Bus::new();
    let mut mmio = Bus::new();

    let drained = EventFd::new(0).map_err(|e| Error::Device(format!("eventfd: {e}")))?;
    let serial = Arc::new(Mutex::new(Serial::new(
        irq_line(irqchip, COM1_IRQ)?,
        serial_out,
        Some(
            drained
                .try_clone()
                .map_err(|e| Error::Device(format!("eventfd: {e}")))?,
        ),
    )));
    insert(&mut pio, serial.clone(), COM1_PORT, 8)?;

    let trigger = |ev| EventTrigger {
        tx: Mutex::new(events.clone()),
        event: VmEvent::System(ev),
    };
    let i8042 = I8042::new(trigger(SystemEvent::Reset), irq_line(irqchip, I8042_IRQ)?);
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
    let sink: Arc<Mutex<dyn BusDevice>> = Arc::new(Mutex::new(Sink));
    for &(base, len) in X86_PROBED_PORTS {
        insert(&mut pio, sink.clone(), base, len)?;
    }

    if boot_timer {
        let timer = Arc::new(Mutex::new(BootTimer::new(start)));
        insert(&mut mmio, timer, BOOT_TIMER_START, BOOT_TIMER_SIZE)?;
    }

    Ok(Platform {
        pio,
        mmio,
        serial,
        serial_drained: drained,
    })
}
