//! `legacy`: the platform devices through the buses, as vCPU exits reach them: the 16550 UART,
//! i8042, CMOS, the ACPI PM block, pvpanic, the probed-port sink and the boot timer on the
//! x86_64 port bus, the PL031 and the user-space IOAPIC (`--irqchip split`) on MMIO. Any port,
//! any width (vCPU exits give 1 to 8 bytes; the target also tries 0), any value; host input,
//! IOAPIC line changes and the EOIs the hypervisor reports arrive between accesses.
//!
//! Input: a sequence of operations ([`run`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use devices::bus::BusAccess;
use devices::irqchip::{Ioapic, MsiSender, IOAPIC_BASE, IOAPIC_SIZE};
use devices::legacy::{
    sink::X86_PROBED_PORTS, AcpiPm, BootTimer, Cmos, PvPanic, RtcPl031, Serial, Sink, I8042,
};
use devices::{Bus, EventFd, EventFdTrigger};

use crate::util::{Count, Fields};

/// Where berth puts them (vmm/src/platform; the ACPI ports from the tables).
const COM1: u64 = 0x3f8;
const I8042_PORT: u64 = 0x60;
const CMOS_PORT: u64 = 0x70;
const PM_PORT: u64 = 0x600;
const PVPANIC_PORT: u64 = 0x505;
const BOOT_TIMER: u64 = 0xf000_0000;
const PL031: u64 = 0x0901_0000;

/// Ports and windows the accesses aim at (plus anything else the bytes say).
pub const BASES: &[(bool, u64)] = &[
    (true, COM1),
    (true, I8042_PORT),
    (true, CMOS_PORT),
    (true, PM_PORT),
    (true, PVPANIC_PORT),
    (true, 0x80),
    (true, 0x3c0),
    (false, BOOT_TIMER),
    (false, PL031),
    (false, IOAPIC_BASE),
    (false, IOAPIC_BASE + 0x10),
    (false, IOAPIC_BASE + 0x40),
];

/// Operation codes (the first byte of each operation, modulo their number).
pub const READ: u8 = 0;
pub const WRITE: u8 = 1;
/// An access to any address of either bus: `u8` bus (even: ports), `u64` address, data.
pub const ANYWHERE_READ: u8 = 2;
pub const ANYWHERE_WRITE: u8 = 3;
/// Host input for the UART (what the stdin feeder enqueues): data.
pub const INPUT: u8 = 4;
/// An IOAPIC input line changes: `u8` pin (any value), `u8` level (odd: high).
pub const LINE: u8 = 5;
/// The hypervisor reports the guest's EOI: `u8` vector.
pub const EOI: u8 = 6;
const OPS: u8 = 7;

/// Counts what the IOAPIC sends (the hypervisor's injection and routes).
#[derive(Default)]
struct Msis;

impl MsiSender for Msis {
    fn send(&self, _address: u64, _data: u32) {}
    fn pin_changed(&self, pin: usize, _msi: Option<(u64, u32)>) {
        assert!(pin < 24, "a route for pin {pin}");
    }
}

fn cmos_clock() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

struct Platform {
    pio: Bus,
    mmio: Bus,
    serial: Arc<Mutex<Serial>>,
    ioapic: Arc<Mutex<Ioapic<Msis>>>,
}

fn platform() -> Platform {
    let mut pio = Bus::new();
    let mut mmio = Bus::new();
    let irq = EventFdTrigger::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
    let serial = Arc::new(Mutex::new(Serial::new(
        irq,
        Box::new(std::io::sink()),
        None,
    )));
    let line = Count::default();
    let add = |bus: &mut Bus, dev: Arc<dyn BusAccess>, base: u64, len: u64| {
        bus.insert(dev, base, len).expect("bus layout");
    };
    add(&mut pio, serial.clone(), COM1, 8);
    add(
        &mut pio,
        Arc::new(Mutex::new(I8042::new(line.clone(), line.clone()))),
        I8042_PORT,
        5,
    );
    add(
        &mut pio,
        Arc::new(Mutex::new(Cmos::new(cmos_clock))),
        CMOS_PORT,
        2,
    );
    let pm = AcpiPm::new(line.clone(), line.clone(), 5, 1);
    add(&mut pio, Arc::new(Mutex::new(pm)), PM_PORT, 3);
    add(
        &mut pio,
        Arc::new(Mutex::new(PvPanic::new(line))),
        PVPANIC_PORT,
        1,
    );
    let sink: Arc<dyn BusAccess> = Arc::new(Mutex::new(Sink));
    for &(base, len) in X86_PROBED_PORTS {
        add(&mut pio, sink.clone(), base, len);
    }
    add(
        &mut mmio,
        Arc::new(Mutex::new(BootTimer::new(Instant::now()))),
        BOOT_TIMER,
        0x1000,
    );
    add(
        &mut mmio,
        Arc::new(Mutex::new(RtcPl031::default())),
        PL031,
        0x1000,
    );
    let ioapic = Arc::new(Mutex::new(Ioapic::new(Msis)));
    add(&mut mmio, ioapic.clone(), IOAPIC_BASE, IOAPIC_SIZE);
    Platform {
        pio,
        mmio,
        serial,
        ioapic,
    }
}

/// Input: operations, each an operation code, then for `READ` and `WRITE` a device index
/// (into `BASES`), an offset byte (below 16) and the data (a length byte, then the bytes; a
/// read uses only the length).
pub fn run(data: &[u8]) {
    let mut f = Fields(data);
    let p = platform();
    let mut buf = [0u8; 8];
    while !f.is_empty() {
        if step(&mut f, &p, &mut buf).is_none() {
            break;
        }
    }
}

fn step(f: &mut Fields<'_>, p: &Platform, buf: &mut [u8; 8]) -> Option<()> {
    match f.u8()? % OPS {
        op @ (READ | WRITE) => {
            let (io, base) = BASES[usize::from(f.u8()?) % BASES.len()];
            let addr = base + u64::from(f.u8()? % 16);
            let data = f.data()?;
            let bus = if io { &p.pio } else { &p.mmio };
            if op == WRITE {
                bus.write(addr, data);
            } else {
                bus.read(addr, &mut buf[..data.len()]);
            }
        }
        op @ (ANYWHERE_READ | ANYWHERE_WRITE) => {
            let bus = if f.u8()? % 2 == 0 { &p.pio } else { &p.mmio };
            let addr = f.u64()?;
            let data = f.data()?;
            if op == ANYWHERE_WRITE {
                bus.write(addr, data);
            } else {
                bus.read(addr, &mut buf[..data.len()]);
            }
        }
        LINE => {
            let pin = usize::from(f.u8()?);
            let level = f.u8()? % 2 == 1;
            p.ioapic.lock().unwrap().service_irq(pin, level);
        }
        EOI => {
            let vector = f.u8()?;
            p.ioapic.lock().unwrap().end_of_interrupt(vector);
        }
        _ => {
            let n = usize::from(f.u8()?);
            let bytes = f.take(n.min(f.0.len()))?;
            p.serial.lock().unwrap().enqueue_input(bytes);
        }
    }
    Some(())
}
